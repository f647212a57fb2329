"""One linear's weight in any layout of ``format/layouts.py``, with the figures the export report shows.

The float layouts are the weight as it is (packing.py); block4_int8 quantizes it first (quantization.py). The
exporter packs every linear with ``pack_linear``, and ``sparsebert.kernels.pack`` does too, so a layer packed
by hand is the layer a file would hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .packing import analyze, check_sparse_width, pack_arrays
from .quantization import quantize_weight_int8

INT8_ARRAYS = ("block_ptr", "block_col", "block_values", "scales")


@dataclass(frozen=True)
class PackedWeight:
    arrays: dict[str, np.ndarray]  # the layout's arrays (format/layouts.py), without the bias
    stats: dict[str, Any]  # packing.analyze of the weight: shape, nnz, sparsity, block_fill, nbytes
    block_fill: float  # nonzero weights / weights a 4-block layout stores (block4_int8: its zero-filled blocks)
    weight_error: float | None = None  # block4_int8: RMS of the quantization error over RMS of the weights


def pack_linear(weight: Any, layout: str, scales: Any = None) -> PackedWeight:
    """``weight`` ([N, K]) packed in ``layout``, one of ``format.layouts.LAYOUTS``.

    ``scales`` (block4_int8 only, float32 [N]): a quantized checkpoint's per-row scales; rows with a finite
    scale keep that int8 grid, NaN rows get one chosen here (``quantization.quantize_weight_int8``).
    """
    stats = analyze(weight)
    if layout == "block4_int8":
        check_sparse_width(layout, stats["shape"][1])
        q = quantize_weight_int8(weight, scales)
        return PackedWeight({k: q[k] for k in INT8_ARRAYS}, stats, q["block_fill"], q["relative_error"])
    if scales is not None:
        raise ValueError(f"scales= is for the block4_int8 layout; {layout} stores the weight as it is")
    return PackedWeight(pack_arrays(weight, layout), stats, stats["block_fill"])
