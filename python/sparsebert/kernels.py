"""Direct access to the packed linear kernels, for benchmarking or custom graphs.

``pack`` turns one weight matrix into a ``_core.PackedLinear`` whose ``matmul``
computes ``W @ x + b`` on feature-major activations ``x`` of shape [K, tokens].
The extension's names (``PackedLinear``, ``int8_isa``, ...) are looked up on first
use, so importing this module does not need the extension.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _native
from ._native import available_isas, default_isa
from .convert.pack import pack_linear
from .convert.packing import DENSE_BELOW, analyze, choose_layout
from .format.layouts import LAYOUTS
from .tuning import Tuning

# The extension's own objects, resolved on first access (module __getattr__ below).
_FROM_CORE = ("PackedLinear", "int8_isa")

LAYOUT_CHOICES = ("auto", *LAYOUTS)


def _float32(name: str, value: Any) -> np.ndarray:
    array = np.asarray(value)
    # bool would silently become 0/1 weights, complex would drop its imaginary part.
    if array.dtype.kind not in "fiu":
        raise TypeError(f"{name} must hold real numbers, got dtype {array.dtype}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values (after conversion to float32)")
    return array


def pack(weight: Any, bias: Any = None, layout: str = "auto", dense_below: float = DENSE_BELOW,
         tuning: Tuning | None = None) -> Any:
    """Pack a [N, K] weight (and optional [N] bias) into a ``_core.PackedLinear``.

    ``layout="auto"`` picks dense / unstructured / block4 from the weight's
    sparsity and block fill, exactly as the exporter does. ``tuning`` overrides the
    sparse layouts' K-block width and row groups (``sparsebert.tuning.Tuning``).
    """
    if layout not in LAYOUT_CHOICES:
        raise ValueError(f"layout must be one of {', '.join(LAYOUT_CHOICES)}, got {layout!r}")
    weight = _float32("weight", weight)
    if weight.ndim != 2:
        raise ValueError(f"weight must be 2-D [out_features, in_features], got shape {weight.shape}")
    if bias is not None:
        bias = _float32("bias", bias)
        if bias.shape != (weight.shape[0],):
            raise ValueError(f"bias must have shape ({weight.shape[0]},), got {bias.shape}")
    if layout == "auto":
        layout = choose_layout(analyze(weight), dense_below)
    return _native.to_packed_linear(layout, pack_linear(weight, layout).arrays, bias, weight.shape, tuning)


def pack_int8(weight: Any, bias: Any = None) -> Any:
    """Pack a [N, K] weight (and optional [N] bias) as int8 4-blocks (``convert.quantization.quantize_weight_int8``)
    into a ``_core.PackedLinear`` of layout ``block4_int8``; its ``matmul`` quantizes activations per token."""
    return pack(weight, bias, layout="block4_int8")


def __getattr__(name: str) -> Any:
    if name not in _FROM_CORE:
        raise AttributeError(f"module 'sparsebert.kernels' has no attribute {name!r}")
    return getattr(_native.core(), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_FROM_CORE))


__all__ = ["PackedLinear", "available_isas", "default_isa", "int8_isa", "pack", "pack_int8"]  # noqa: F822 (from _core)
