"""SparseEngine: load a ``.sbert`` file into the C++ encoder and run it on numpy inputs.

The C++ Encoder re-checks everything itself; the checks here exist to give
messages that name the input and say what is wrong in Python terms.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from . import _native
from .errors import ModelFormatError
from .format import PackedModel, read_model
from .format.spec import expected_tensors, max_sequence_length

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
MAX_TOKENS = (2**31 - 1) // 4  # batch x seq of one call, as the C++ encoder bounds it (index arithmetic in int32)


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
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    return int(num_threads)


def _check_isa(isa: Any) -> str:
    available = list(_native.available_isas())
    if isa is None:
        return _native.default_isa()  # ValueError if SPARSEBERT_ISA names something this CPU cannot run
    if isa not in available:
        raise ValueError(f"isa {isa!r} is not available on this CPU; available: {', '.join(available)}")
    return isa


def output_names_for(config: Mapping[str, Any]) -> list[str]:
    names = ["last_hidden_state"]
    # A pooler that is the first layer of a classification head (RoBERTa's classifier.dense, DistilBERT's
    # pre_classifier) is no output of the transformers model, so not of ours.
    if config["has_pooler"] and not config.get("pooler_is_head", False):
        names.append("pooler_output")
    if config["head"] in ("sequence_classification", "token_classification"):
        names.append("logits")
    elif config["head"] == "question_answering":
        names += ["start_logits", "end_logits"]
    return names


def _build_tensors(model: PackedModel) -> dict[str, Any]:
    arrays, linears = expected_tensors(model.config)
    tensors: dict[str, Any] = {name: model.tensors[name] for name in arrays}
    for name in linears:
        meta = model.linears[name]
        own = model.linear_arrays(name)
        bias = own.pop("bias")
        try:
            tensors[name] = _native.to_packed_linear(meta["layout"], own, bias, tuple(meta["shape"]))
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
        self._output_names = output_names_for(model.config)

    @classmethod
    def load(cls, path: str | os.PathLike, num_threads: int | None = None, isa: str | None = None,
             verify: bool = True) -> SparseEngine:
        """Read ``path`` (checking CRCs when ``verify``), pack its linears and build the C++ encoder.

        num_threads defaults to the CPUs this process may run on; isa defaults to
        ``default_isa()`` (the best available, or ``SPARSEBERT_ISA``).
        """
        num_threads = _check_threads(num_threads)
        isa = _check_isa(isa)
        model = read_model(path, verify_crc=verify)
        tensors = _build_tensors(model)
        try:
            encoder = _native.core().Encoder(dict(model.config), tensors, num_threads, isa)
        except ValueError as exc:
            raise ModelFormatError(f"the encoder refused the model: {exc}", model.path) from None
        return cls(encoder, model)

    # ------------------------------------------------------------------------------------ properties

    @property
    def isa(self) -> str:
        return self._encoder.isa

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
    def linears(self) -> list[dict[str, Any]]:
        """One row per packed linear (name, layout, shape, nnz, sparsity, block_fill, bytes)."""
        return [dict(row) for row in self._linears]

    @property
    def path(self) -> str:
        return self._path

    def __repr__(self) -> str:
        c = self._config
        return (f"SparseEngine(path={self._path!r}, layers={c['num_hidden_layers']}, hidden={c['hidden_size']}, "
                f"head={c['head']!r}, isa={self.isa!r}, num_threads={self.num_threads})")

    # ------------------------------------------------------------------------------------ running

    def run(self, inputs: Mapping[str, Any] | Sequence[Any], output_hidden_states: bool = False
            ) -> dict[str, np.ndarray]:
        """Encode a batch.

        ``inputs``: a dict keyed by ``input_names`` or a list/tuple in that order; only
        ``input_ids`` is required ([batch, seq] integers); ``attention_mask`` defaults
        to ones and ``token_type_ids`` to zeros.  Returns float32 arrays keyed by
        ``output_names``; with ``output_hidden_states``, also ``hidden_states``
        [layers + 1, batch, seq, hidden]: the embeddings' output, then each layer's
        (transformers' ``output_hidden_states``, stacked; the last is ``last_hidden_state``).
        """
        if not isinstance(output_hidden_states, (bool, np.bool_)):
            raise TypeError(f"output_hidden_states must be True or False, got {output_hidden_states!r}")
        output_hidden_states = bool(output_hidden_states)
        named = self._name_inputs(inputs)
        ids, mask, types = (self._check_input(n, named.get(n)) for n in INPUT_NAMES)
        shape = ids.shape
        for name, array in (("attention_mask", mask), ("token_type_ids", types)):
            if array is not None and array.shape != shape:
                raise ValueError(f"{name} has shape {array.shape} but input_ids has shape {shape}")
        if shape[0] == 0 or shape[1] == 0:
            raise ValueError(f"input_ids has shape {shape}; batch and sequence length must be at least 1")
        if shape[0] * shape[1] > MAX_TOKENS:
            raise ValueError(f"input_ids has {shape[0] * shape[1]} tokens; one call takes at most {MAX_TOKENS}")
        longest = max_sequence_length(self._config)
        if shape[1] > longest:
            raise ValueError(f"sequence length {shape[1]} exceeds the longest this model accepts ({longest}, "
                             f"from max_position_embeddings {self._config['max_position_embeddings']})")
        _check_range("input_ids", ids, 0, self._config["vocab_size"])
        if types is not None:
            _check_range("token_type_ids", types, 0, self._config["type_vocab_size"])
        if mask is not None and not ((mask == 0) | (mask == 1)).all():
            raise ValueError("attention_mask must contain only 0 and 1")
        mask = np.ones(shape, np.int32) if mask is None else _to_int32(mask)
        types = np.zeros(shape, np.int32) if types is None else _to_int32(types)
        ids = _to_int32(ids)
        # The C++ encoder serialises concurrent runs itself (one set of scratch buffers per engine).
        out = self._encoder.run(ids, mask, types, output_hidden_states)
        names = [*self._output_names, *(["hidden_states"] if output_hidden_states else [])]
        return {name: out[name] for name in names}

    def profile(self, inputs: Mapping[str, Any] | Sequence[Any], runs: int = 10) -> dict[str, float]:
        """Mean wall time in milliseconds of each op of ``run(inputs)`` over ``runs`` runs, each op summed over
        the layers (embeddings, qkv, attention, attention_output, layer_norm, ffn_up and ffn_down — or ffn when
        the two run fused —, heads_and_output). The timed runs are extra runs; the engine's outputs are not returned."""
        if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
            raise ValueError(f"runs must be a positive integer, got {runs!r}")
        totals: dict[str, float] = {}
        self._encoder.profiling = True
        try:
            for _ in range(runs):
                self.run(inputs)
                for op, ms in self._encoder.last_profile():
                    totals[op] = totals.get(op, 0.0) + ms / runs
        finally:
            self._encoder.profiling = False
        return totals

    def _name_inputs(self, inputs: Any) -> dict[str, Any]:
        if isinstance(inputs, Mapping):
            unknown = [k for k in inputs if k not in INPUT_NAMES]
            if unknown:
                raise ValueError(f"unknown input(s) {', '.join(map(repr, unknown))}; "
                                 f"allowed: {', '.join(INPUT_NAMES)}")
            named = {k: v for k, v in inputs.items() if v is not None}
        elif isinstance(inputs, (list, tuple)):
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


def _check_range(name: str, array: np.ndarray, low: int, high: int) -> None:
    # Checked on the caller's dtype, before the int32 cast could wrap large values into range.
    if array.size and (array.min() < low or array.max() >= high):
        bad = array[(array < low) | (array >= high)].flat[0]
        raise ValueError(f"{name} holds {int(bad)}, outside [{low}, {high})")


def _to_int32(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.int32 and array.flags.c_contiguous and array.flags.writeable and array.flags.aligned:
        return array
    # A fresh C-ordered, aligned native int32 copy: covers Fortran order, strides, byte order, read-only and
    # misaligned arrays.
    return np.array(array, dtype=np.int32, order="C", copy=True)
