"""Import the compiled extension on first use, with a hint when it is not built.

Only modules that compute (engine, kernels, PackedLinear building) need it; the
file format, the packer and the exporter are pure Python so they work, and can be
tested, without a compiler.
"""

from __future__ import annotations

from types import ModuleType


def load_core() -> ModuleType:
    try:
        from . import _core
    except ImportError as exc:
        raise ImportError(
            f"sparsebert's compiled extension sparsebert._core is not available ({exc}); "
            "build it with `pip install -e .` from the repository root"
        ) from exc
    return _core
