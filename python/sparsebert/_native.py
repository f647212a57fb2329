"""The one bridge to the compiled extension ``sparsebert._core``.

``core()`` imports it on first use, with a hint when it is not built. Modules that compute (the engine, the
kernel API, the benchmarks) call it when they compute, never at import, so importing any module of the package
works, and the file format and exporter can be used and tested, without a compiler.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import ModuleType
from typing import Any

import numpy as np

from .format.layouts import LAYOUTS


def core() -> ModuleType:
    """The compiled extension, imported on the first call (ImportError with a build hint if it is missing)."""
    try:
        from . import _core  # the extension itself: deferred so that importing the package never needs it
    except ImportError as exc:
        raise ImportError(
            f"sparsebert's compiled extension sparsebert._core is not available ({exc}); "
            "build it with `pip install -e .` from the repository root"
        ) from exc
    return _core


def available_isas() -> list[str]:
    """ISAs this CPU and OS can run, best first."""
    return core().available_isas()


def default_isa() -> str:
    """SPARSEBERT_ISA when set (ValueError if unknown or unsupported here), else the best available ISA."""
    return core().default_isa()


def to_packed_linear(
    layout: str,
    arrays: Mapping[str, np.ndarray],
    bias: np.ndarray | None = None,
    shape: tuple[int, int] | None = None,
    **options: Any,
) -> Any:
    """Build a ``_core.PackedLinear`` from a layout's arrays (``convert.pack.pack_linear``, or read from a file).

    ``shape`` ([N, K]) is required for the sparse layouts, whose arrays do not determine K; for dense it is
    taken from the weight. Any further keyword arguments go to the ``_core.PackedLinear`` constructor as given.
    """
    packed_linear = core().PackedLinear
    if layout == "dense":
        return packed_linear.dense(arrays["weight"], bias, **options)
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    if shape is None:
        raise ValueError(f"the {layout} layout needs shape=(n_rows, n_cols)")
    n_rows, n_cols = (int(d) for d in shape)
    if layout == "unstructured":
        return packed_linear.unstructured(
            n_rows, n_cols, arrays["row_ptr"], arrays["col_idx"], arrays["values"], bias, **options
        )
    if layout == "block4_int8":
        return packed_linear.block4_int8(
            n_rows, n_cols, arrays["block_ptr"], arrays["block_col"], arrays["block_values"], arrays["scales"], bias,
            **options
        )
    return packed_linear.block4(
        n_rows, n_cols, arrays["block_ptr"], arrays["block_col"], arrays["block_values"], bias, **options
    )
