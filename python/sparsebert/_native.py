"""The one bridge to the compiled extension ``sparsebert._core``.

``core()`` imports it on first use, with a hint when it is not built. Modules call it when they need it (to
compute, or to read a rule the engine owns: the config schema, the weight names, the limits), never at import,
so ``import sparsebert`` and the CLI's help stay cheap and say how to build the extension when it is missing.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import ModuleType
from typing import Any

import numpy as np

from .tuning import Tuning


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
    tuning: Tuning | None = None,
) -> Any:
    """Build a ``_core.PackedLinear`` from a layout's arrays (``convert.pack.pack_linear``, or read from a file).

    ``shape`` ([N, K]) is required for the sparse layouts, whose arrays do not determine K; for dense it is
    taken from the weight. ``tuning`` (default: the engine's own choices) sets the sparse layouts' K-blocks and
    row groups.
    """
    packed_linear = core().PackedLinear
    options = (tuning or Tuning()).pack_options(layout)
    if layout == "dense":
        return packed_linear.dense(arrays["weight"], bias)
    if layout not in ("unstructured", "block4", "block4_int8"):
        raise ValueError(f"unknown layout {layout!r}")
    if shape is None:
        raise ValueError(f"the {layout} layout needs shape=(n_rows, n_cols)")
    n_rows, n_cols = (int(d) for d in shape)
    if layout == "unstructured":
        return packed_linear.unstructured(
            n_rows, n_cols, arrays["row_ptr"], arrays["col_idx"], arrays["values"], bias, **options
        )
    if layout == "block4_int8":
        return packed_linear.block4_int8(
            n_rows, n_cols, arrays["block_ptr"], arrays["block_col"], arrays["block_values"], arrays["scales"], bias
        )
    return packed_linear.block4(
        n_rows, n_cols, arrays["block_ptr"], arrays["block_col"], arrays["block_values"], bias, **options
    )
