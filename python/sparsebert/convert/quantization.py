"""int8 weights for the VNNI kernels: symmetric, one scale per output channel, stored as 4-blocks along K.

Unstructured weights are grouped into the 4-blocks that hold any nonzero, zero-filled; ``block_fill`` says how
much of what is stored is real weights. Activations are quantized in C++ at run time (u8 with a scale and zero
point per token, kernels.h), so nothing here depends on inputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._native import core
from .packing import pack_arrays

INT8_MAX = 127  # symmetric: the scales chosen here never give -128 (a quantized checkpoint's grid may hold it)


def quantize_weight_int8(weight: Any, scales: Any = None) -> dict[str, Any]:
    """``weight`` (float32 [N, K]) as s8 4-blocks: ``block_ptr``, ``block_col``, ``block_values`` (int8
    [blocks, 4]), ``scales`` (float32 [N], row r's weights ~= scales[r] * block_values), and the report figures
    ``block_fill`` (nonzero weights / stored weights), ``max_abs_error`` (largest |w - dequantized w|) and
    ``relative_error`` (RMS of w - dequantized w over RMS of w).

    ``scales`` (float32 [N], optional): rows with a finite scale already lie on that int8 grid (a quantized
    checkpoint, convert/qat.py) and keep it, -128 included; NaN rows get the symmetric scale chosen here."""
    weight = np.ascontiguousarray(weight, dtype=np.float32)
    if weight.ndim != 2:
        raise ValueError(f"weight must be 2-D [out_features, in_features], got shape {weight.shape}")
    most = core().INT8_MAX_COLS  # the kernels' int32 sums stay exact up to here
    if weight.shape[1] > most:
        raise ValueError(f"int8 layers take at most {most} input columns, got {weight.shape[1]}")
    arrays = pack_arrays(weight, "block4")
    ptr, values = arrays["block_ptr"], arrays["block_values"]
    peak = np.abs(weight).max(axis=1) if weight.size else np.zeros(weight.shape[0], np.float32)
    chosen = (peak / INT8_MAX).astype(np.float32)
    given = np.zeros(weight.shape[0], bool)
    if scales is not None:
        scales = np.asarray(scales, dtype=np.float32)
        if scales.shape != (weight.shape[0],):
            raise ValueError(f"scales must have one value per row ({weight.shape[0]}), got shape {scales.shape}")
        given = np.isfinite(scales)
        chosen = np.where(given, scales, chosen).astype(np.float32)
        if (chosen[given] <= 0).any():
            raise ValueError("given scales must be > 0")
    scales = chosen
    # A row of zeros keeps scale 0: its s8 values are all 0 and it contributes only its bias.
    divisor = np.where(scales > 0, scales, np.float32(1))
    row_of_block = np.repeat(np.arange(weight.shape[0]), np.diff(ptr))
    q = np.rint(values / divisor[row_of_block, None])
    on_grid = given[row_of_block]
    if on_grid.any():
        # The checkpoint's integers come back exactly; anything else means the weights are not on their grid.
        grid_q = q[on_grid]
        off = np.abs(grid_q * divisor[row_of_block[on_grid], None] - values[on_grid]) > 1e-6 * np.abs(values[on_grid])
        if off.any() or grid_q.min() < -INT8_MAX - 1 or grid_q.max() > INT8_MAX:
            raise ValueError("weights do not lie on the int8 grid of their given scales")
    q = np.clip(q, np.where(on_grid, -INT8_MAX - 1, -INT8_MAX)[:, None], INT8_MAX).astype(np.int8)
    stored = q.size
    dequantized = q.astype(np.float32) * scales[row_of_block, None]
    return {
        "block_ptr": ptr,
        "block_col": arrays["block_col"],
        "block_values": np.ascontiguousarray(q),
        "scales": scales,
        "block_fill": float(np.count_nonzero(weight) / stored) if stored else 1.0,
        "max_abs_error": float(np.abs(dequantized - values).max()) if stored else 0.0,
        "relative_error": _relative_rms(dequantized - values, values),
    }


def _relative_rms(error: np.ndarray, reference: np.ndarray) -> float:
    norm = float(np.sqrt(np.mean(np.square(reference, dtype=np.float64)))) if reference.size else 0.0
    return float(np.sqrt(np.mean(np.square(error, dtype=np.float64)))) / norm if norm > 0 else 0.0
