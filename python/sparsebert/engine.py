"""SparseEngine: load a ``.sbert`` file into the C++ encoder and run it on numpy inputs.

The rules live in C++ (the config schema, the weight names, the thread cap, the input ranges and the token limit:
csrc/encoder/encoder_spec.h); Python reads them from ``_core``. What is checked here is what only Python can see:
argument types, numpy dtypes and shapes, and integers that would wrap when narrowed to int32.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from . import _native
from .errors import ModelFormatError
from .format import PackedModel, read_model
from .format.spec import encoder_spec
from .tuning import Tuning

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
DEFAULT_PAD_ID = 0  # what a file without pad_token_id in its config pads with (BERT's and DistilBERT's [PAD])
INT32 = np.iinfo(np.int32)


def _default_threads() -> int:
    # Affinity, not cpu_count: under taskset / cgroup cpusets more threads than usable cores only contend.
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _check_threads(num_threads: Any) -> int:
    if num_threads is None:
        return _default_threads()
    if isinstance(num_threads, bool) or not isinstance(num_threads, (int, np.integer)):
        raise TypeError(f"num_threads must be a positive integer, got {num_threads!r}")
    most = _native.core().MAX_THREADS
    if not 1 <= num_threads <= most:
        raise ValueError(f"num_threads must be in [1, {most}], got {num_threads}")
    return int(num_threads)


def _check_max_batch_tokens(value: Any) -> int:
    core = _native.core()
    if value is None:
        return core.DEFAULT_MAX_BATCH_TOKENS
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"max_batch_tokens must be a positive integer, got {value!r}")
    if not 1 <= value <= core.MAX_TOKENS:
        raise ValueError(f"max_batch_tokens must be in [1, {core.MAX_TOKENS}], got {value}")
    return int(value)


ATTENTION_PRECISIONS = ("fp32", "bf16")
ATTENTION_VARIABLE = "SPARSEBERT_ATTENTION"


def attention_precision(value: Any = None) -> str:
    """The attention precision ``load(attention=value)`` runs: value itself, or for None ``SPARSEBERT_ATTENTION``,
    else "fp32" (ValueError for anything else)."""
    if value is None:
        text = os.environ.get(ATTENTION_VARIABLE, "").strip()
        if text and text not in ATTENTION_PRECISIONS:
            raise ValueError(f"{ATTENTION_VARIABLE}={text!r}: expected one of {', '.join(ATTENTION_PRECISIONS)}")
        return text or "fp32"
    if value not in ATTENTION_PRECISIONS:
        raise ValueError(f"attention must be one of {', '.join(ATTENTION_PRECISIONS)}, got {value!r}")
    return value


def bf16_attention_unavailable(isa: str | None = None) -> str | None:
    """None when ``attention="bf16"`` can run on this machine on ISA path ``isa`` (default: ``default_isa()``),
    else why not (it needs AMX, Intel Xeon since Sapphire Rapids, on Linux 5.16 or newer, and the avx512 path)."""
    return _native.core().bf16_attention_unavailable(isa)


def _check_isa(isa: Any) -> str:
    available = list(_native.available_isas())
    if isa is None:
        return _native.default_isa()  # ValueError if SPARSEBERT_ISA names something this CPU cannot run
    if isa not in available:
        raise ValueError(f"isa {isa!r} is not available on this CPU; available: {', '.join(available)}")
    return isa


def _build_tensors(model: PackedModel, spec: Mapping[str, Any], tuning: Tuning) -> dict[str, Any]:
    # float16 embedding tables arrive widened; the C++ builder copies every array, so the widened ones go when
    # load() returns.
    tensors: dict[str, Any] = {name: model.float32_array(name) for name in spec["arrays"]}
    for name in spec["linears"]:
        meta = model.linears[name]
        own = model.linear_arrays(name)
        bias = own.pop("bias")
        try:
            tensors[name] = _native.to_packed_linear(meta["layout"], own, bias, tuple(meta["shape"]), tuning)
        except ValueError as exc:
            raise ModelFormatError(f"linear {name!r}: {exc}", model.path) from None
    return tensors


class SparseEngine:
    """A loaded sparse BERT encoder.  Build with ``SparseEngine.load(path)``."""

    def __init__(self, encoder: Any, model: PackedModel):
        # Private: use load(), which returns a complete engine or raises, so no half-built engine can exist.
        # Keeps only metadata, not the mapped file.
        if not isinstance(encoder, _native.core().Encoder) or not isinstance(model, PackedModel):
            raise TypeError("SparseEngine objects are made by SparseEngine.load(path)")
        self._encoder = encoder
        self._path = model.path
        self._config = dict(model.config)
        self._linears = [{"name": name, **meta} for name, meta in model.linears.items()]
        spec = encoder_spec(model.config)
        self._output_names = list(spec["outputs"])
        self._max_sequence_length = spec["max_sequence_length"]

    @classmethod
    def load(cls, path: str | os.PathLike, num_threads: int | None = None, isa: str | None = None,
             verify: bool = True, tuning: Tuning | None = None, max_batch_tokens: int | None = None,
             attention: str | None = None) -> SparseEngine:
        """Read ``path`` (checking CRCs when ``verify``), pack its linears and build the C++ encoder.

        num_threads defaults to the CPUs this process may run on; isa defaults to
        ``default_isa()`` (the best available, or ``SPARSEBERT_ISA``); tuning to
        ``Tuning.from_environment()`` (speed only: results are the same). ``max_batch_tokens``
        (default ``_core.DEFAULT_MAX_BATCH_TOKENS``, 2048) bounds the working memory: a larger
        call runs in chunks of whole sequences of at most that many tokens (same results).
        ``attention`` (default ``SPARSEBERT_ATTENTION``, else ``"fp32"``): ``"bf16"`` runs attention's two
        matrix products with bf16 inputs and fp32 sums on AMX, faster and less precise; ValueError where
        ``bf16_attention_unavailable()`` says why not, or when isa is not ``"avx512"``.
        """
        num_threads = _check_threads(num_threads)
        isa = _check_isa(isa)
        from_environment = attention is None and bool(os.environ.get(ATTENTION_VARIABLE, "").strip())
        attention = attention_precision(attention)
        if attention == "bf16" and (why_not := bf16_attention_unavailable(isa)):  # before reading the file
            raise ValueError(why_not + (f" ({ATTENTION_VARIABLE}=bf16)" if from_environment else ""))
        max_batch_tokens = _check_max_batch_tokens(max_batch_tokens)
        if tuning is None:
            tuning = Tuning.from_environment()
        elif not isinstance(tuning, Tuning):
            raise TypeError(f"tuning must be a sparsebert.tuning.Tuning, got {type(tuning).__name__}")
        model = read_model(path, verify_crc=verify)  # the file is valid by the engine's own rules from here on
        tensors = _build_tensors(model, encoder_spec(model.config), tuning)
        encoder = _native.core().Encoder(dict(model.config), tensors, num_threads, isa, fuse_ffn=tuning.fuse_ffn,
                                         max_batch_tokens=max_batch_tokens,
                                         bf16_attention=attention == "bf16")
        return cls(encoder, model)

    # ------------------------------------------------------------------------------------ properties

    @property
    def isa(self) -> str:
        return self._encoder.isa

    @property
    def attention(self) -> str:
        """The precision of attention's matrix products: "fp32", or "bf16" (``load(attention=...)``)."""
        return "bf16" if self._encoder.bf16_attention else "fp32"

    @property
    def num_threads(self) -> int:
        return self._encoder.num_threads

    @property
    def config(self) -> dict[str, Any]:
        return dict(self._config)

    @property
    def input_names(self) -> list[str]:
        return list(INPUT_NAMES)

    @property
    def output_names(self) -> list[str]:
        return list(self._output_names)

    @property
    def pad_token_id(self) -> int:
        """The id inputs are padded with (RoBERTa's position ids skip it; run() warns when it looks like padding
        and no attention_mask is given)."""
        return int(self._config.get("pad_token_id", DEFAULT_PAD_ID))

    @property
    def max_batch_tokens(self) -> int:
        """Tokens one chunk of a call computes at a time (the bound on the working memory)."""
        return self._encoder.max_batch_tokens

    @property
    def max_sequence_length(self) -> int:
        """The longest sequence one call accepts (from the position table; RoBERTa gives up its padding offset)."""
        return self._max_sequence_length

    @property
    def linears(self) -> list[dict[str, Any]]:
        """One row per packed linear (name, layout, shape, nnz, sparsity, block_fill, bytes)."""
        return [dict(row) for row in self._linears]

    @property
    def path(self) -> str:
        return self._path

    def __repr__(self) -> str:
        c = self._config
        return (f"SparseEngine(path={self._path!r}, layers={c['num_hidden_layers']}, hidden={c['hidden_size']}, "
                f"head={c['head']!r}, isa={self.isa!r}, attention={self.attention!r}, num_threads={self.num_threads})")

    # ------------------------------------------------------------------------------------ running

    def run(self, inputs: Mapping[str, Any] | Sequence[Any], output_hidden_states: bool = False,
            logits_at: Any = None) -> dict[str, np.ndarray]:
        """Encode a batch.

        ``inputs``: a dict keyed by ``input_names`` or a list/tuple in that order (so a batch
        is one array, not a list of token lists); only ``input_ids`` is required ([batch, seq]
        integers); ``token_type_ids`` defaults to zeros and ``attention_mask`` to ones: without
        a mask every token attends to every token, padding included (a UserWarning says so when
        the ids look right-padded with the model's pad id, as transformers warns).  Returns float32 arrays keyed by
        ``output_names``; with ``output_hidden_states``, also ``hidden_states``
        [layers + 1, batch, seq, hidden]: the embeddings' output, then each layer's
        (transformers' ``output_hidden_states``, stacked; the last is ``last_hidden_state``).

        A masked-LM model returns ``logits`` [batch, seq, vocab]; ``logits_at``, integer
        (batch index, position) pairs [pairs, 2], computes them only there, as [pairs, vocab]
        in the pairs' order (the decoder to the vocabulary costs more than the encoder when
        run at every token).
        """
        if not isinstance(output_hidden_states, (bool, np.bool_)):
            raise TypeError(f"output_hidden_states must be True or False, got {output_hidden_states!r}")
        arrays = self._arrays(inputs)
        pairs = None if logits_at is None else _logits_pairs(logits_at, self._config["head"])
        # The encoder checks the values (ids and types in their vocabularies, a 0/1 mask, the sequence length, the
        # pairs inside the batch) on its own copy, and serialises concurrent runs (one set of scratch buffers).
        out = self._encoder.run(*arrays, bool(output_hidden_states), pairs)
        names = [*self._output_names, *(["hidden_states"] if output_hidden_states else [])]
        return {name: out[name] for name in names}

    def profile(self, inputs: Mapping[str, Any] | Sequence[Any], runs: int = 10) -> dict[str, float]:
        """Mean wall time in milliseconds of each op of ``run(inputs)`` over ``runs`` runs, each op summed over
        the layers and chunks (embeddings, qkv, attention, attention_output, layer_norm, ffn — or ffn_tiled when
        FFN up and down cannot run fused —, heads_and_output). The timed runs are extra runs; the engine's
        outputs are not returned. Safe while other threads run the engine: each call times only itself."""
        if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
            raise ValueError(f"runs must be a positive integer, got {runs!r}")
        arrays = self._arrays(inputs)
        totals: dict[str, float] = {}
        for _ in range(runs):
            _, times = self._encoder.run_profiled(*arrays)
            for op, ms in times:
                totals[op] = totals.get(op, 0.0) + ms / runs
        return totals

    def _arrays(self, inputs: Mapping[str, Any] | Sequence[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The int32 input_ids, attention_mask, token_type_ids the encoder takes (checks Python alone can do)."""
        named = self._name_inputs(inputs)
        ids, mask, types = (self._check_input(n, named.get(n)) for n in INPUT_NAMES)
        shape = ids.shape
        for name, array in (("attention_mask", mask), ("token_type_ids", types)):
            if array is not None and array.shape != shape:
                raise ValueError(f"{name} has shape {array.shape} but input_ids has shape {shape}")
        most = _native.core().MAX_TOKENS
        if shape[0] * shape[1] > most:  # before any copy: a broadcast view can be far larger than memory
            raise ValueError(f"input_ids has {shape[0] * shape[1]} tokens; one call takes at most {most}")
        for name, array in (("input_ids", ids), ("attention_mask", mask), ("token_type_ids", types)):
            _check_fits_int32(name, array)
        ids = _to_int32(ids)
        if mask is None:
            self._warn_if_padded(ids)
        mask = np.ones(shape, np.int32) if mask is None else _to_int32(mask)
        types = np.zeros(shape, np.int32) if types is None else _to_int32(types)
        return ids, mask, types

    def _warn_if_padded(self, ids: np.ndarray) -> None:
        """A UserWarning when ``ids`` hold the pad id after a real token (right padding) and no mask was given:
        the padding is then attended to as text, which changes every token's output (as transformers warns)."""
        pad = self.pad_token_id
        is_pad = ids == pad
        after_text = np.logical_or.accumulate(~is_pad, axis=1)[:, :-1]
        if (is_pad[:, 1:] & after_text).any():
            warnings.warn(f"input_ids contain the pad token id {pad} after other tokens, but no attention_mask was "
                          "given, so padding is attended to as text; pass the attention_mask (0 on padding)",
                          UserWarning, stacklevel=4)

    def _name_inputs(self, inputs: Any) -> dict[str, Any]:
        if isinstance(inputs, Mapping):
            unknown = [k for k in inputs if k not in INPUT_NAMES]
            if unknown:
                raise ValueError(f"unknown input(s) {', '.join(map(repr, unknown))}; "
                                 f"allowed: {', '.join(INPUT_NAMES)}")
            named = {k: v for k, v in inputs.items() if v is not None}
        elif isinstance(inputs, (list, tuple)):
            if inputs and _is_one_sequence(inputs[0]):
                raise ValueError(
                    f"run() reads a list as ({', '.join(INPUT_NAMES)}), so its first item must be the whole "
                    "[batch, seq] input_ids, not one sequence; pass a batch as one array, e.g. "
                    "run({'input_ids': np.array([[101, 7592, 102], [101, 2054, 102]])}) (rows padded to one length, "
                    "with their attention_mask)")
            if not 1 <= len(inputs) <= len(INPUT_NAMES):
                raise ValueError(f"expected 1 to {len(INPUT_NAMES)} inputs ({', '.join(INPUT_NAMES)}), "
                                 f"got {len(inputs)}")
            named = {k: v for k, v in zip(INPUT_NAMES, inputs) if v is not None}
        else:
            raise TypeError(f"inputs must be a dict or a list/tuple of arrays ({', '.join(INPUT_NAMES)}), "
                            f"got {type(inputs).__name__}")
        if "input_ids" not in named:
            raise ValueError("input_ids is required")
        return named

    @staticmethod
    def _check_input(name: str, value: Any) -> np.ndarray | None:
        if value is None:
            return None
        array = np.asarray(value)
        # bool is an integer kind to numpy ("b" vs "iu") but a mask of True/False is a likely bug elsewhere.
        if array.dtype.kind not in "iu":
            raise TypeError(f"{name} must be an integer array, got dtype {array.dtype}")
        if array.ndim != 2:
            raise ValueError(f"{name} must be 2-D [batch, seq], got shape {array.shape}")
        return array


def _logits_pairs(logits_at: Any, head: str) -> np.ndarray:
    """``run``'s logits_at as int32 [pairs, 2] (the encoder checks that they lie inside the batch)."""
    if head != "masked_lm":
        raise ValueError(f"logits_at is for a model with a masked_lm head; this one has head {head!r}")
    array = np.asarray(logits_at)
    if array.size == 0:
        return np.zeros((0, 2), np.int32)
    if array.dtype.kind not in "iu":
        raise ValueError(f"logits_at must hold integer (batch index, position) pairs, got dtype {array.dtype}")
    if array.ndim != 2 or array.shape[1] != 2:
        raise ValueError(f"logits_at must have shape [pairs, 2] (batch index, position), got {array.shape}")
    _check_fits_int32("logits_at", array)
    return _to_int32(array)


def _is_one_sequence(value: Any) -> bool:
    """Whether ``value`` is a token id or a flat list / 1-D array of them: one sequence, where run()'s list form
    wants the batch's input_ids."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return True
    if not isinstance(value, (list, tuple, np.ndarray)):
        return False
    try:
        return np.ndim(value) == 1
    except ValueError:  # ragged: a list of token lists of different lengths is a batch, if a badly shaped one
        return False


def _check_fits_int32(name: str, array: np.ndarray | None) -> None:
    # On the caller's dtype, before the int32 cast could wrap a large value into range.
    if array is None or not array.size or np.can_cast(array.dtype, np.int32):
        return
    if array.min() < INT32.min or array.max() > INT32.max:
        bad = array[(array < INT32.min) | (array > INT32.max)].flat[0]
        raise ValueError(f"{name} holds {int(bad)}, outside the int32 range of token ids")


def _to_int32(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.int32 and array.flags.c_contiguous and array.flags.writeable and array.flags.aligned:
        return array
    # A fresh C-ordered, aligned native int32 copy: covers Fortran order, strides, byte order, read-only and
    # misaligned arrays.
    return np.array(array, dtype=np.int32, order="C", copy=True)
