"""Checkpoint -> packed ``.sbert`` file: load, map, choose a layout per linear, pack, write."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .._version import __version__
from ..format import write_model
from ..format.layouts import LAYOUTS
from .pack import pack_linear
from .packing import DENSE_BELOW, analyze, choose_layout, stored_nbytes
from . import compaction, hf_bert, hf_checkpoint, hf_config, hf_distilbert, qat
from .sentence_transformers_config import sentence_config
from .report import ExportReport, LinearRow, describe_calibration, describe_compaction, describe_quantized_checkpoint

LAYOUT_CHOICES = ("auto", *LAYOUTS)
QUANTIZE_CHOICES = (None, "int8")
INT8_PREFIX = "layers."  # with quantize="int8", the encoder layers' linears are int8; heads and pooler stay fp32


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
    """
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

    out_dir = os.path.dirname(os.path.abspath(os.fspath(out_path)))
    if not os.path.isdir(out_dir):
        # Fail before the (possibly long) load and pack, not at the final write.
        raise FileNotFoundError(f"output directory does not exist: {out_dir}")

    onnx_config, config = config, None  # below, `config` is the encoder config
    is_onnx = isinstance(source, (str, os.PathLike)) and os.fspath(source).lower().endswith(".onnx")
    if is_onnx and not os.path.isfile(source):
        raise FileNotFoundError(f"no such ONNX file: {os.fspath(source)}")
    tokenizer_text = _tokenizer_text(os.path.dirname(os.fspath(source)) if is_onnx else source, tokenizer)
    if is_onnx:
        from .onnx_import import load_onnx

        checkpoint = load_onnx(os.fspath(source), onnx_config)
    elif onnx_config is not None:
        raise ValueError("config= is only for ONNX sources; a checkpoint directory has its own config.json")
    else:
        checkpoint = hf_checkpoint.load_checkpoint(source)
    config = hf_config.encoder_config(checkpoint)
    sentence_keys, sentence_note = sentence_config(source)
    config.update(sentence_keys)
    mapper = hf_distilbert if checkpoint.family == "distilbert" else hf_bert
    items = mapper.encoder_tensors(checkpoint, config)
    # A quantized checkpoint's int8 grid (qat.py), kept for the linears int8 export packs.
    row_scales = qat.layer_row_scales(checkpoint.weight_scales, checkpoint.family, config["num_hidden_layers"])
    def float_layout(stats: dict[str, Any]) -> str:
        return choose_layout(stats, dense_below) if layout == "auto" else layout

    if compact:
        def packs_as_block4(weight) -> bool:
            # Compaction consults this for encoder-layer projections only, which int8 packs as 4-blocks.
            return quantize == "int8" or float_layout(analyze(weight)) in ("block4", "block4_int8")

        compaction.compact(items, config, packs_as_block4, row_scales)

    def chosen_layout(name: str, stats: dict[str, Any]) -> str:
        return "block4_int8" if quantize == "int8" and name.startswith(INT8_PREFIX) else float_layout(stats)

    tensors, rows = _pack_items(items, chosen_layout, row_scales)

    grid = _grid_summary(checkpoint.weight_scales, row_scales, quantize)
    notes = [n for n in (describe_compaction(config), sentence_note, grid and describe_quantized_checkpoint(grid)) if n]
    report = ExportReport(rows, notes="\n".join(notes) or None)
    producer = {
        "name": "sparsebert",
        "version": __version__,
        "source": checkpoint.source,
        "architecture": checkpoint.architecture,
        "layout": layout,
        "dense_below": dense_below,
        "compact": compact,
    }
    if grid:
        producer["quantized_checkpoint"] = grid
    if quantize == "int8":
        from .calibration import calibrate

        producer["quantize"] = "int8"
        twin, twin_rows = _pack_items(items, lambda name, stats: float_layout(stats))
        twin_meta = {row.name: row.to_meta() for row in twin_rows}
        result = calibrate(out_path, config, (report.linears_meta(), tensors), (twin_meta, twin), tokenizer_text,
                           calibration)
        producer["calibration"] = result
        report.notes = "\n".join(n for n in (report.notes, describe_calibration(result)) if n)
    if not is_onnx:
        write_model(out_path, config, report.linears_meta(), tensors, producer, tokenizer=tokenizer_text)
    else:
        # Written beside the destination, checked against ONNX Runtime, then moved into place: a graph that
        # does not compute what sparsebert runs never replaces a file.
        from .onnx_import import check_against_onnxruntime

        staging = os.fspath(out_path) + ".checking"
        # The graph computes in float: with quantize="int8" its fp32 twin is the packing it must agree with.
        checked = (twin_meta, twin) if quantize == "int8" else (report.linears_meta(), tensors)
        try:
            write_model(staging, config, *checked, producer, tokenizer=tokenizer_text)
            worst, stripped = check_against_onnxruntime(os.fspath(source), staging)
            if quantize == "int8":
                write_model(out_path, config, report.linears_meta(), tensors, producer, tokenizer=tokenizer_text)
            else:
                os.replace(staging, out_path)
        finally:
            if os.path.exists(staging):
                os.remove(staging)
        note = ("checked against ONNX Runtime on the same file: max |difference| "
                f"{worst:.2g}" if worst is not None else "not checked against ONNX Runtime (not installed)")
        if quantize == "int8":
            note = "the fp32 twin " + note
        if stripped:
            note += " (its activation QuantizeLinear / DequantizeLinear pairs removed: the weights are compared)"
        report.notes = "\n".join(n for n in (report.notes, note) if n)
    report.path = os.fspath(out_path)
    report.file_bytes = os.path.getsize(out_path)
    if verbose:
        print(report)
    return report


def _pack_items(items: dict[str, Any], chosen_layout,
                row_scales: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[LinearRow]]:
    """The file's tensors and one report row per linear, each linear packed in ``chosen_layout(name, stats)``
    (stats: ``packing.analyze`` of its weight); int8 linears take their per-row scales from ``row_scales``
    where a quantized checkpoint set them."""
    tensors, rows = {}, []
    for name, item in items.items():
        if not isinstance(item, tuple):
            tensors[name] = item
            continue
        weight, bias = item
        stats = analyze(weight)
        chosen = chosen_layout(name, stats)
        scales = (row_scales or {}).get(name) if chosen == "block4_int8" else None
        packed = pack_linear(weight, chosen, scales)
        tensors.update({f"{name}.{suffix}": array for suffix, array in packed.arrays.items()})
        tensors[f"{name}.bias"] = bias
        rows.append(LinearRow(
            name=name,
            shape=(weight.shape[0], weight.shape[1]),
            nnz=stats["nnz"],
            sparsity=stats["sparsity"],
            block_fill=packed.block_fill,
            layout=chosen,
            bytes=stored_nbytes(packed.arrays, bias),
            weight_error=packed.weight_error,
        ))
    return tensors, rows


def _grid_summary(weight_scales: dict[str, Any], row_scales: dict[str, Any], quantize: str | None) -> dict | None:
    """What an export kept of a quantized checkpoint's int8 grid (qat.py), for the file and the report."""
    if not weight_scales:
        return None
    if quantize != "int8":
        return {"linears": len(weight_scales), "int8": False}
    return {"linears": len(row_scales), "int8": True, "rows": sum(len(v) for v in row_scales.values()),
            "rows_regridded": sum(int(np.isnan(v).sum()) for v in row_scales.values())}


def _tokenizer_text(source: Any, tokenizer: Any) -> str | None:
    from ..tokenizer_text import TOKENIZER_FILE, tokenizer_json

    if tokenizer is not None:
        return tokenizer_json(tokenizer)
    if isinstance(source, (str, os.PathLike)) and os.path.isfile(os.path.join(source, TOKENIZER_FILE)):
        return tokenizer_json(source)
    return None
