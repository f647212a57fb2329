"""int8 weights for the VNNI kernels: symmetric, one scale per output channel, stored as 4-blocks along K.

Unstructured weights are grouped into the 4-blocks that hold any nonzero, zero-filled; ``block_fill`` says how
much of what is stored is real weights. Activations are quantized in C++ at run time (u8 with a scale and zero
point per token, kernels.h), so nothing here depends on inputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .packing import pack_arrays

INT8_MAX = 127  # symmetric: -128 is never used, so negating a weight never overflows
MAX_INT8_COLS = 32768  # keeps the kernel's int32 sums exact (PackedLinear::kInt8MaxCols)


def quantize_weight_int8(weight: Any) -> dict[str, Any]:
    """``weight`` (float32 [N, K]) as s8 4-blocks: ``block_ptr``, ``block_col``, ``block_values`` (int8
    [blocks, 4]), ``scales`` (float32 [N], row r's weights ~= scales[r] * block_values), and the report figures
    ``block_fill`` (nonzero weights / stored weights), ``max_abs_error`` (largest |w - dequantized w|) and
    ``relative_error`` (RMS of w - dequantized w over RMS of w)."""
    weight = np.ascontiguousarray(weight, dtype=np.float32)
    if weight.ndim != 2:
        raise ValueError(f"weight must be 2-D [out_features, in_features], got shape {weight.shape}")
    if weight.shape[1] > MAX_INT8_COLS:
        raise ValueError(f"int8 layers take at most {MAX_INT8_COLS} input columns, got {weight.shape[1]}")
    arrays = pack_arrays(weight, "block4")
    ptr, values = arrays["block_ptr"], arrays["block_values"]
    peak = np.abs(weight).max(axis=1)
    scales = (peak / INT8_MAX).astype(np.float32)
    # A row of zeros keeps scale 0: its s8 values are all 0 and it contributes only its bias.
    divisor = np.where(scales > 0, scales, np.float32(1))
    row_of_block = np.repeat(np.arange(weight.shape[0]), np.diff(ptr))
    q = np.rint(values / divisor[row_of_block, None])
    q = np.clip(q, -INT8_MAX, INT8_MAX).astype(np.int8)
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
