"""Checkpoint -> packed ``.sbert`` file, as a pipeline of steps that each do one job and can be run alone:

    read_checkpoint   a directory, model object or .onnx file, and its tokenizer -> Source
    map_names         -> MappedModel: the encoder config, the canonical tensors, a quantized checkpoint's scales
    compact_model     remove heads and FFN neurons that cannot change the output (compaction.py)
    choose_layouts    {linear: layout} from LayoutOptions: the one place a layout is decided
    pack              -> Packed: the file's tensors and one report row per linear (pack.py)
    with_embeddings   the embedding tables in the precision the file stores (embeddings="fp16": float16)
    calibrate         quantize="int8" only: the int8 packing against its fp32 twin (calibration.py)
    write             the file; from an ONNX source, checked against ONNX Runtime before it replaces anything
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .._version import __version__
from ..format import write_model
from ..format.layouts import LAYOUTS
from ..format.spec import HALF_TABLES
from ..spelling import option
from ..tokenizer_text import TOKENIZER_FILE, tokenizer_json
from . import compaction, hf_bert, hf_config, hf_distilbert, masked_lm, qat
from .calibration import calibrate
from .checkpoint import Checkpoint
from .destination import check_destination, files_read
from .hf_bert import Item
from .hf_checkpoint import load_checkpoint
from .onnx_import import check_against_onnxruntime, load_onnx
from .pack import pack_linear
from .packing import DENSE_BELOW, analyze, choose_layout, stored_nbytes
from .report import (ExportReport, LinearRow, describe_calibration, describe_compaction, describe_density,
                     describe_quantized_checkpoint, embedding_storage, unpacked_bytes)
from .sentence_transformers_config import sentence_config
from .tokenizer_files import converted_tokenizer, has_slow_tokenizer

LAYOUT_CHOICES = ("auto", *LAYOUTS)
QUANTIZE_CHOICES = (None, "int8")
EMBEDDINGS_CHOICES = ("fp32", "fp16")  # the embedding tables' precision in the file (format/spec.py, HALF_TABLES)
INT8_PREFIX = "layers."  # with quantize="int8", the encoder layers' linears are int8; heads and pooler stay fp32
BLOCK4_LAYOUTS = ("block4", "block4_int8")  # layouts whose 4-blocks run along the input dimension


@dataclass(frozen=True)
class LayoutOptions:
    """How ``choose_layouts`` decides: export()'s ``layout``, ``dense_below`` and ``quantize``."""

    layout: str = "auto"  # "auto": per linear from its sparsity and block fill; else forced on every linear
    dense_below: float = DENSE_BELOW
    quantize: str | None = None  # "int8": the encoder layers' linears are block4_int8 whatever `layout` says

    def float_twin(self) -> LayoutOptions:
        """The options of an int8 export's fp32 twin: the same choice without quantization."""
        return replace(self, quantize=None)


@dataclass
class Source:
    """What ``read_checkpoint`` found."""

    checkpoint: Checkpoint
    tokenizer_text: str | None = None  # carried into the file for sparsebert.pipeline
    onnx_path: str | None = None  # an ONNX source: the packed model is checked against this graph
    sentence_keys: dict[str, Any] | None = None  # a sentence-transformers directory's pooling, for the config
    sentence_note: str | None = None  # ... or why its pooling cannot be reproduced


@dataclass
class MappedModel:
    """A checkpoint under the file's names (ARCHITECTURE.md)."""

    config: dict[str, Any]  # the encoder config
    items: dict[str, Item]  # tensors in file order; a linear is (weight [N, K], bias [N])
    row_scales: dict[str, np.ndarray]  # a quantized checkpoint's per-row int8 scales of encoder linears (qat.py)


@dataclass
class Packed:
    """What a file stores of a model's packing: its tensors, and one report row per linear."""

    tensors: dict[str, np.ndarray]
    rows: list[LinearRow]

    @property
    def linears(self) -> dict[str, dict[str, Any]]:
        """The header's ``linears`` entries."""
        return {row.name: row.to_meta() for row in self.rows}


def export(
    source: Any,
    out_path: str | os.PathLike,
    layout: str = "auto",
    dense_below: float = DENSE_BELOW,
    verbose: bool = True,
    compact: bool = True,
    tokenizer: Any = None,
    config: Any = None,
    quantize: str | None = None,
    calibration: str | os.PathLike | None = None,
    head: str | None = None,
    embeddings: str = "fp32",
) -> ExportReport:
    """Export a BERT, RoBERTa or DistilBERT checkpoint (directory or transformers model) to a ``.sbert`` file.

    ``layout="auto"`` chooses per linear layer: dense below ``dense_below`` sparsity,
    else block4 when the nonzeros fill aligned 4-blocks well, else unstructured.
    Any other value forces that layout on every linear.  With ``compact``, attention
    heads and FFN neurons that cannot change the output are removed (convert/compaction.py).
    The per-layer report is printed when ``verbose`` and always returned.  The tokenizer
    (``tokenizer=``: a tokenizer.json path or directory, a ``tokenizers.Tokenizer`` or a
    fast ``transformers`` tokenizer; by default the source directory's ``tokenizer.json``
    when it has one) is carried into the file for ``sparsebert.pipeline``.

    ``source`` may also be an ``.onnx`` file written by ``torch.onnx.export`` or Optimum
    (convert/onnx_import.py); ``config`` is then its transformers config (a dict or a
    config.json path; default: the config.json beside it), and the packed model is checked
    against ONNX Runtime on the same file (when installed) before it replaces ``out_path``.

    ``quantize="int8"`` stores every encoder-layer linear as int8 4-blocks (layout ``block4_int8``:
    symmetric, one scale per output channel; unstructured nonzeros are grouped into zero-filled 4-blocks);
    the pooler and heads stay fp32. The int8 model is then compared with its fp32 twin on calibration inputs
    (``calibration``: a text file, one input per line, tokenized with the model's tokenizer; default: random
    tokens) and the agreement is stored in the file and printed (convert/calibration.py), for the whole model and
    after each layer. A quantized checkpoint whose weight scales can be read (QAT fake-quantizers, torch's
    quantized linears, a QDQ ONNX graph: convert/qat.py, convert/onnx_import.py) keeps its int8 weights and scales.

    Masked-LM checkpoints (BertForMaskedLM, BertForPreTraining, RobertaForMaskedLM, DistilBertForMaskedLM) export
    as their bare encoder, as the base model would; ``head="masked_lm"`` keeps the masked-LM head (logits over the
    vocabulary, its decoder tied to the word embeddings and stored once: convert/masked_lm.py) for the
    ``fill-mask`` pipeline. ``head="none"`` exports any checkpoint's bare encoder. What is left out is reported.

    ``embeddings="fp16"`` stores the word, position and token type embedding tables in float16 (the LayerNorm after
    them stays fp32): half their bytes, which are most of a pruned small model's file. They are widened to fp32 at
    load, so the engine runs unchanged on values rounded to float16 (each moved by at most 2^-11 of itself; a
    masked-LM head's tied decoder is the word table, so it uses them too) and a loaded model takes the same memory.
    Measured on all-MiniLM-L6-v2 against the fp32-table file (60 sentences, benchmarks/embeddings_fp16.py): unpruned,
    last_hidden_state moves by at most 7.0e-4, token cosine >= 1 - 3e-8, sentence embeddings' cosine >= 1 - 2e-8,
    and the file shrinks from 87.2 to 64.4 MiB; pruned to 90% in 4-blocks, from 51.3 to 28.5 MiB (int8: from 48.3
    to 25.6 MiB, sentence embeddings' cosine to the int8 file with fp32 tables >= 0.9999). Such a file has layout
    revision 3, which older sparsebert versions refuse as newer than they know (files without fp16 tables keep
    revision 2). With ``quantize="int8"`` the fp32 twin the int8 model is calibrated against stores the same fp16
    tables, so the stored agreement is that of the int8 layers alone; from an ONNX source, ONNX Runtime is compared
    with the packing before its tables are rounded.
    """
    _check_arguments(layout, dense_below, quantize, calibration, head, embeddings)
    check_destination(out_path, files_read(source, tokenizer, config, calibration))
    try:
        report = _export(source, out_path, LayoutOptions(layout, dense_below, quantize), compact, tokenizer, config,
                         calibration, head, embeddings)
    except OSError as exc:
        if exc.filename is None and exc.errno is not None:  # a failed write names no file: name the destination
            raise OSError(exc.errno, exc.strerror, os.fspath(out_path)) from exc
        raise
    if verbose:
        print(report)
    return report


def _export(source: Any, out_path: str | os.PathLike, options: LayoutOptions, compact: bool, tokenizer: Any,
            config: Any, calibration: str | os.PathLike | None, head: str | None = None,
            embeddings: str = "fp32") -> ExportReport:
    layout, dense_below, quantize = options.layout, options.dense_below, options.quantize
    found = read_checkpoint(source, tokenizer, config)
    model = map_names(found, head)
    if compact:
        compact_model(model, options)
    packed = pack(model.items, choose_layouts(model.items, options), model.row_scales)
    stored = with_embeddings(packed, embeddings)
    grid = qat.grid_summary(found.checkpoint.weight_scales, model.row_scales, quantize == "int8")
    notes = [masked_lm.describe_dropped(found.checkpoint, model.config), describe_compaction(model.config),
             found.sentence_note, grid and describe_quantized_checkpoint(grid)]
    producer = {"name": "sparsebert", "version": __version__, "source": found.checkpoint.source,
                "architecture": found.checkpoint.architecture, "layout": layout, "dense_below": dense_below,
                "compact": compact, "embeddings": embeddings, **({"quantized_checkpoint": grid} if grid else {})}
    checked = None if stored is packed else packed  # ONNX Runtime computes in fp32: compared with fp32 tables
    if quantize == "int8":
        producer["quantize"] = "int8"
        checked = pack(model.items, choose_layouts(model.items, options.float_twin()))
        # The twin stores the tables as the int8 file does, so the agreement measures the int8 layers alone.
        twin = with_embeddings(checked, embeddings)
        producer["calibration"] = calibrate(out_path, model.config, (stored.linears, stored.tensors),
                                            (twin.linears, twin.tensors), found.tokenizer_text, calibration)
        notes.append(describe_calibration(producer["calibration"]))
    notes.append(write(out_path, model, stored, producer, found, checked))
    report = ExportReport(stored.rows, path=os.fspath(out_path), file_bytes=os.path.getsize(out_path),
                          other_bytes=unpacked_bytes(stored.linears, stored.tensors),
                          embeddings=embedding_storage(stored.tensors))
    notes.append(describe_density(report, dense_below))
    report.notes = "\n".join(n for n in notes if n) or None
    return report


def _check_arguments(layout: Any, dense_below: Any, quantize: Any, calibration: Any, head: Any = None,
                     embeddings: Any = "fp32") -> None:
    masked_lm.check_head(head)
    if embeddings not in EMBEDDINGS_CHOICES:
        raise ValueError(f"embeddings must be one of {', '.join(map(repr, EMBEDDINGS_CHOICES))}, got {embeddings!r}")
    if layout not in LAYOUT_CHOICES:
        raise ValueError(f"layout must be one of {', '.join(LAYOUT_CHOICES)}, got {layout!r}")
    if quantize not in QUANTIZE_CHOICES:
        raise ValueError(f"quantize must be None or 'int8', got {quantize!r}")
    if calibration is not None and quantize is None:
        raise ValueError("calibration= is for quantize='int8'")
    if calibration is not None and not os.path.isfile(calibration):
        raise FileNotFoundError(f"no such calibration file: {os.fspath(calibration)}")
    if isinstance(dense_below, bool) or not isinstance(dense_below, (int, float)) or not 0 <= dense_below <= 1:
        raise ValueError(f"dense_below must be a number in [0, 1], got {dense_below!r}")


def read_checkpoint(source: Any, tokenizer: Any = None, config: Any = None) -> Source:
    """Read ``source`` (a checkpoint directory, a transformers model object or an ``.onnx`` file with its
    transformers ``config``), its tokenizer (``tokenizer``, else the directory's tokenizer.json) and, from a
    sentence-transformers directory, its pooling."""
    is_onnx = isinstance(source, (str, os.PathLike)) and os.fspath(source).lower().endswith(".onnx")
    if is_onnx and not os.path.isfile(source):
        raise FileNotFoundError(f"no such ONNX file: {os.fspath(source)}")
    tokenizer_text = _tokenizer_text(os.path.dirname(os.fspath(source)) if is_onnx else source, tokenizer)
    if is_onnx:
        checkpoint = load_onnx(os.fspath(source), config)
    elif config is not None:
        raise ValueError(f"{option('config')} is only for ONNX sources; a checkpoint directory has its own "
                         "config.json")
    else:
        checkpoint = load_checkpoint(source)
    sentence_keys, sentence_note = sentence_config(source)
    return Source(checkpoint, tokenizer_text, os.fspath(source) if is_onnx else None, sentence_keys, sentence_note)


def _tokenizer_text(source: Any, tokenizer: Any) -> str | None:
    """``tokenizer`` if given, else the source directory's; a directory without tokenizer.json but with a slow
    tokenizer's files is converted (tokenizer_files.py)."""
    given = tokenizer is not None
    where = tokenizer if given else source
    if isinstance(where, (str, os.PathLike)) and os.path.isdir(where):
        if os.path.isfile(os.path.join(where, TOKENIZER_FILE)):
            return tokenizer_json(where)
        if has_slow_tokenizer(os.fspath(where)):
            return tokenizer_json(converted_tokenizer(os.fspath(where)))
        if not given:
            return None
    elif not given:
        return None
    return tokenizer_json(where)


def map_names(source: Source, head: str | None = None) -> MappedModel:
    """The encoder config (UnsupportedModelError listing every misfit) and the checkpoint's tensors under the
    file's names (hf_bert.py, hf_distilbert.py), with the per-row scales of a quantized checkpoint's linears.
    ``head``: as export()'s (masked_lm.export_head)."""
    checkpoint = source.checkpoint
    config = hf_config.encoder_config(checkpoint, head)
    config.update(source.sentence_keys or {})
    mapper = hf_distilbert if checkpoint.family == "distilbert" else hf_bert
    items = mapper.encoder_tensors(checkpoint, config)
    row_scales = qat.layer_row_scales(checkpoint.weight_scales, checkpoint.family, config["num_hidden_layers"])
    return MappedModel(config, items, row_scales)


def compact_model(model: MappedModel, options: LayoutOptions) -> list[compaction.LayerCompaction]:
    """Remove, in place, the heads and FFN neurons that cannot change the output (compaction.py), keeping whole
    4-blocks in the linears that ``options`` packs in a 4-block layout."""
    narrowed = {name: item for name, item in model.items.items() if name.endswith(compaction.NARROWED)}
    block4 = {name for name, layout in choose_layouts(narrowed, options).items() if layout in BLOCK4_LAYOUTS}
    return compaction.compact(model.items, model.config, block4, model.row_scales)


def choose_layouts(items: dict[str, Any], options: LayoutOptions) -> dict[str, str]:
    """The layout of every linear (a (weight, bias) item) in ``items``, by name: block4_int8 for the encoder
    layers' linears when quantizing to int8; else ``options.layout``, or with "auto" ``packing.choose_layout``
    (dense below ``dense_below`` sparsity, block4 when the nonzeros fill 4-blocks well, else unstructured)."""
    layouts = {}
    for name, item in items.items():
        if not isinstance(item, tuple):
            continue  # embeddings and LayerNorm parameters are stored as they are
        if options.quantize == "int8" and name.startswith(INT8_PREFIX):
            layouts[name] = "block4_int8"
        elif options.layout != "auto":
            layouts[name] = options.layout
        else:
            layouts[name] = choose_layout(analyze(item[0]), options.dense_below)
    return layouts


def pack(items: dict[str, Any], layouts: dict[str, str], row_scales: dict[str, np.ndarray] | None = None) -> Packed:
    """The file's tensors and report rows: each linear packed in ``layouts[name]`` (its bias stored beside it),
    everything else as it is. int8 linears keep a quantized checkpoint's grid where ``row_scales`` has it."""
    tensors, rows = {}, []
    for name, item in items.items():
        if not isinstance(item, tuple):
            tensors[name] = item
            continue
        weight, bias = item
        layout = layouts[name]
        packed = pack_linear(weight, layout, (row_scales or {}).get(name) if layout == "block4_int8" else None)
        tensors.update({f"{name}.{suffix}": array for suffix, array in packed.arrays.items()})
        tensors[f"{name}.bias"] = bias
        rows.append(LinearRow(name=name, shape=(weight.shape[0], weight.shape[1]), nnz=packed.stats["nnz"],
                              sparsity=packed.stats["sparsity"], block_fill=packed.block_fill, layout=layout,
                              bytes=stored_nbytes(packed.arrays, bias), weight_error=packed.weight_error))
    return Packed(tensors, rows)


def with_embeddings(packed: Packed, embeddings: str) -> Packed:
    """``packed`` with its embedding tables (format/spec.py, HALF_TABLES) in the precision ``embeddings`` names:
    "fp32" is ``packed`` itself, "fp16" a copy whose tables are rounded to float16 (ValueError for a table with
    values beyond float16's range)."""
    if embeddings == "fp32":
        return packed
    tensors = dict(packed.tensors)
    for name in HALF_TABLES:
        table = tensors[name]
        with np.errstate(over="ignore"):  # overflow is refused below, naming the table
            half = table.astype(np.float16)
        overflow = np.isfinite(table) & ~np.isfinite(half)
        if overflow.any():
            raise ValueError(f"{name} holds {float(table[overflow][0]):.6g}, beyond float16's range "
                             f"(+-{float(np.finfo(np.float16).max):g}): keep it in fp32 ({option('embeddings_fp32')})")
        tensors[name] = half
    return Packed(tensors, packed.rows)


def write(out_path: str | os.PathLike, model: MappedModel, packed: Packed, producer: dict[str, Any], source: Source,
          checked: Packed | None = None) -> str | None:
    """Write the file. From an ONNX source a float packing is first written beside the destination and checked
    against ONNX Runtime on the same graph, so a graph that does not compute what sparsebert runs never replaces a
    file; returns the note on that check. The packing checked is ``packed`` itself, or ``checked`` when ``packed``
    computes differently from the graph by design: the fp32 twin of an int8 packing, the fp32 tables of fp16 ones."""
    if source.onnx_path is None:
        _write_file(out_path, model, packed, producer, source)
        return None
    staging = os.fspath(out_path) + ".checking"
    try:
        _write_file(staging, model, checked or packed, producer, source)
        worst, stripped = check_against_onnxruntime(source.onnx_path, staging)
        if checked is not None:
            _write_file(out_path, model, packed, producer, source)
        else:
            os.replace(staging, out_path)
    finally:
        if os.path.exists(staging):
            os.remove(staging)
    note = ("checked against ONNX Runtime on the same file: max |difference| "
            f"{worst:.2g}" if worst is not None else "not checked against ONNX Runtime (not installed)")
    if checked is not None:
        note = "its float packing (fp32 weights and embedding tables) " + note
    if stripped:
        note += " (its activation QuantizeLinear / DequantizeLinear pairs removed: the weights are compared)"
    return note


def _write_file(path: str | os.PathLike, model: MappedModel, packed: Packed, producer: dict[str, Any],
                source: Source) -> None:
    write_model(path, model.config, packed.linears, packed.tensors, producer, tokenizer=source.tokenizer_text)
