"""The per-layer table an export prints, and that ``sparsebert info`` rebuilds from a file; the notes both show
for what a file's config and producer record (compaction, a quantized checkpoint's grid, int8 calibration)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..format.spec import HALF_TABLES, dtype_name
from ..spelling import option

_F32 = 4
_PRECISION = {"float32": "fp32", "float16": "fp16"}  # the on-disk dtypes of the embedding tables, as reports say them


@dataclass(frozen=True)
class LinearRow:
    """One packed linear layer: what it is, how sparse, which layout it got, what it costs."""

    name: str
    shape: tuple[int, int]
    nnz: int
    sparsity: float
    block_fill: float
    layout: str
    bytes: int  # packed arrays + bias, as stored
    weight_error: float | None = None  # int8 layouts: RMS of the quantization error over RMS of the weights

    @property
    def precision(self) -> str:
        return "int8" if self.layout.endswith("_int8") else "fp32"

    @property
    def dense_bytes(self) -> int:
        """What the same layer takes as a dense fp32 weight plus bias."""
        n_rows, n_cols = self.shape
        return (n_rows * n_cols + n_rows) * _F32

    def to_meta(self) -> dict[str, Any]:
        """The entry stored under ``linears`` in the file header."""
        return {
            "layout": self.layout,
            "shape": list(self.shape),
            "nnz": self.nnz,
            "sparsity": self.sparsity,
            "block_fill": self.block_fill,
            "bytes": self.bytes,
            **({"weight_error": self.weight_error} if self.weight_error is not None else {}),
        }

    @classmethod
    def from_meta(cls, name: str, meta: Mapping[str, Any]) -> LinearRow:
        return cls(
            name=name,
            shape=(int(meta["shape"][0]), int(meta["shape"][1])),
            nnz=int(meta["nnz"]),
            sparsity=float(meta["sparsity"]),
            block_fill=float(meta["block_fill"]),
            layout=str(meta["layout"]),
            bytes=int(meta["bytes"]),
            weight_error=float(meta["weight_error"]) if "weight_error" in meta else None,
        )


def format_bytes(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


@dataclass
class ExportReport:
    """Rows per packed linear plus totals; ``str()`` is an aligned text table."""

    rows: list[LinearRow] = field(default_factory=list)
    path: str | None = None
    file_bytes: int | None = None
    notes: str | None = None  # lines after the table: heads and neurons removed, what could not be carried over
    other_bytes: int | None = None  # the tensors no linear owns (embeddings, LayerNorms), counted in fp32
    embeddings: tuple[str, int] | None = None  # the embedding tables' precision and bytes as stored

    @classmethod
    def from_linears(cls, linears: Mapping[str, Mapping[str, Any]], path: str | None = None,
                     file_bytes: int | None = None, other_bytes: int | None = None,
                     embeddings: tuple[str, int] | None = None) -> ExportReport:
        return cls([LinearRow.from_meta(n, m) for n, m in linears.items()], path, file_bytes,
                   other_bytes=other_bytes, embeddings=embeddings)

    @classmethod
    def from_file(cls, path: str, linears: Mapping[str, Mapping[str, Any]], tensors: Mapping[str, Any],
                  file_bytes: int) -> ExportReport:
        """The report of a packed file: its linears' header entries, its tensors (arrays by name) and its size."""
        return cls.from_linears(linears, path, file_bytes, other_bytes=unpacked_bytes(linears, tensors),
                                embeddings=embedding_storage(tensors))

    def linears_meta(self) -> dict[str, dict[str, Any]]:
        return {row.name: row.to_meta() for row in self.rows}

    @property
    def packed_bytes(self) -> int:
        return sum(row.bytes for row in self.rows)

    @property
    def dense_bytes(self) -> int:
        return sum(row.dense_bytes for row in self.rows)

    @property
    def sparsity(self) -> float:
        """Overall fraction of zero weights, weighted by layer size."""
        size = sum(r.shape[0] * r.shape[1] for r in self.rows)
        return 1.0 - sum(r.nnz for r in self.rows) / size if size else 0.0

    def layout_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in self.rows:
            counts[row.layout] = counts.get(row.layout, 0) + 1
        return counts

    def table(self) -> str:
        header = ("layer", "shape", "sparsity", "block fill", "layout", "precision", "weight error", "packed",
                  "dense fp32")
        body = [
            (
                r.name,
                f"{r.shape[0]}x{r.shape[1]}",
                f"{r.sparsity:.1%}",
                f"{r.block_fill:.2f}",
                r.layout,
                r.precision,
                "" if r.weight_error is None else f"{r.weight_error:.2%}",
                format_bytes(r.bytes),
                format_bytes(r.dense_bytes),
            )
            for r in self.rows
        ]
        total = ("total", f"{len(self.rows)} layers", f"{self.sparsity:.1%}", "", "", "", "",
                 format_bytes(self.packed_bytes), format_bytes(self.dense_bytes))
        widths = [max(len(row[c]) for row in (header, *body, total)) for c in range(len(header))]
        # Text columns left-aligned, numeric columns right-aligned.
        left = {0, 4, 5}

        def line(cells: Iterable[str]) -> str:
            parts = [c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))]
            return "  ".join(parts).rstrip()

        rule = "  ".join("-" * w for w in widths)
        return "\n".join([line(header), rule, *map(line, body), rule, line(total)])

    @property
    def dense_model_bytes(self) -> int | None:
        """The whole model as dense fp32 weights (a checkpoint's size): linears, embeddings and LayerNorms."""
        return None if self.other_bytes is None else self.dense_bytes + self.other_bytes

    def summary(self) -> str:
        """The whole model's size against dense fp32 (first line, when known), the embedding tables' precision and
        bytes, the linear layers' size alone, the file."""
        lines = []
        dense_model = self.dense_model_bytes
        if dense_model is not None:
            # The file when there is one (header and tokenizer included), else the tensors it would hold (those no
            # linear owns counted in fp32).
            size = self.file_bytes if self.file_bytes is not None else self.packed_bytes + self.other_bytes
            what = "file" if self.file_bytes is not None else "packed"
            lines.append(f"whole model: {format_bytes(size)} {what} vs {format_bytes(dense_model)} dense fp32, "
                         f"embeddings included ({_ratio(dense_model, size)})")
        if self.embeddings is not None:
            lines.append(self._embeddings_line())
        layouts = ", ".join(f"{n} {k}" for k, n in self.layout_counts().items())
        lines.append(f"linear layers ({layouts}): {format_bytes(self.packed_bytes)} packed vs "
                     f"{format_bytes(self.dense_bytes)} dense fp32 ({_ratio(self.dense_bytes, self.packed_bytes)})")
        if self.path is not None:
            size_text = f" ({format_bytes(self.file_bytes)})" if self.file_bytes is not None else ""
            lines.append(f"file: {self.path}{size_text}")
        return "\n".join(lines)

    def _embeddings_line(self) -> str:
        precision, nbytes = self.embeddings
        widened = ", widened to fp32 at load" if "fp16" in precision else ""
        share = f", {nbytes / self.file_bytes:.0%} of the file" if self.file_bytes else ""
        return (f"embeddings: {precision}{widened} (word, position and token type tables: {format_bytes(nbytes)}"
                f"{share})")

    def __str__(self) -> str:
        text = self.table() + "\n" + self.summary()
        return text + ("\n" + self.notes if self.notes else "")


def unpacked_bytes(linears: Iterable[str], tensors: Mapping[str, Any]) -> int:
    """The bytes of the tensors that belong to no packed linear (embeddings, LayerNorms) in fp32, the dense model's
    precision, whatever the file stores them in."""
    linears = set(linears)
    return sum(_F32 * int(array.size) for name, array in tensors.items() if name.rsplit(".", 1)[0] not in linears)


def embedding_storage(tensors: Mapping[str, Any]) -> tuple[str, int]:
    """The precision the embedding tables are stored in ("fp32", "fp16", or both named when they differ) and
    their bytes as stored."""
    tables = [tensors[name] for name in HALF_TABLES]
    precisions = sorted({_PRECISION[dtype_name(t.dtype)] for t in tables})
    return " and ".join(precisions), sum(int(t.nbytes) for t in tables)


def _ratio(dense: int, packed: int) -> str:
    if not packed:
        return "empty"
    ratio = dense / packed
    return f"{ratio:.2f}x smaller" if ratio >= 1 else f"{1 / ratio:.2f}x larger"


def describe_density(report: ExportReport, dense_below: float) -> str | None:
    """The note on a model that is essentially unpruned (its linears under ``dense_below`` sparsity, the
    sparsity below which a layer is stored dense), or None."""
    if not report.rows or report.sparsity >= dense_below:
        return None
    return (f"the linear layers are {report.sparsity:.0%} sparse: this model is essentially dense and will run at "
            "about ONNX Runtime's speed (BERT-base dense: 0.8-0.9x its latency); sparsebert's speed comes from pruned "
            "models (BERT-base 90% sparse: about 0.22x; see the README's Performance section)")


def describe_compaction(config: Mapping[str, Any]) -> str | None:
    """One line per compacted layer from a file's config, or None when nothing was removed."""
    if "layer_heads" not in config:
        return None
    heads, neurons = config["num_attention_heads"], config["intermediate_size"]
    kept_h, kept_n = config["layer_heads"], config["layer_intermediate"]
    lines = [f"structured compaction: {sum(heads - k for k in kept_h)} of {heads * len(kept_h)} heads and "
             f"{sum(neurons - k for k in kept_n)} of {neurons * len(kept_n)} FFN neurons removed"]
    for i, (kh, kn) in enumerate(zip(kept_h, kept_n)):
        if kh < heads or kn < neurons:
            lines.append(f"  layer {i}: {heads - kh} heads removed ({kh} kept), {neurons - kn} neurons removed "
                         f"({kn} kept)")
    return "\n".join(lines)


def describe_quantized_checkpoint(summary: Mapping[str, Any]) -> str:
    """The note on what an export kept of a quantized checkpoint's int8 grid (the producer's
    ``quantized_checkpoint`` record)."""
    if not summary["int8"]:
        return (f"quantized checkpoint: {summary['linears']} linears exported in float with the weights they compute "
                f"with; {option('quantize_int8')} keeps them on their int8 grid")
    text = (f"quantized checkpoint: {summary['linears']} encoder linears keep its int8 weights and scales; "
            "activations are quantized per token at run time (its activation scales are not used)")
    if summary["rows_regridded"]:
        text += (f"; {summary['rows_regridded']} of {summary['rows']} rows were not on a grid int8 can hold "
                 "(asymmetric, or not quantized) and were quantized on a symmetric grid of sparsebert's")
    return text


def describe_calibration(result: Mapping[str, Any]) -> str:
    """The note on an int8 file's agreement with its fp32 twin (the producer's ``calibration`` record)."""
    text = (f"int8 vs fp32 on {result['inputs']}: token cosine min {result['min_token_cosine']:.4f}, "
            f"mean {result['mean_token_cosine']:.5f}; max |difference| {result['max_abs_diff']:.3g}")
    if "argmax_agreement" in result:
        text += f"; argmax agreement {result['argmax_agreement']:.1%}"
    layers = result.get("layers")  # files written before the per-layer figures have none
    if layers:
        text += "\nint8 vs fp32 hidden state after each layer:" + "".join(
            f"\n  layer {i}: relative RMS difference {layer['relative_rms']:.2%}, token cosine min "
            f"{layer['min_token_cosine']:.4f}" for i, layer in enumerate(layers))
    return text
