"""sparsebert: a compiled sparse inference runtime for pruned BERT encoders.

    from sparsebert import export, SparseEngine
    export("my-pruned-bert/", "model.sbert")
    engine = SparseEngine.load("model.sbert")
    outputs = engine.run({"input_ids": ids, "attention_mask": mask})

``import sparsebert`` stays cheap: every name but the errors and the version is
resolved on first use, so serving never loads the converter (``export`` is
``sparsebert.convert.export``); torch, transformers and safetensors are only
imported by the converter's loaders and the demo, and the compiled extension only
when something that computes (SparseEngine, kernels, the ISA queries) is first used,
so the file format and converter also work where the extension is not built.
The public submodules (``sparsebert.pruning``, ``sparsebert.kernels``, ``sparsebert.convert``, ...) are
attributes too, imported on first access (PEP 562), so ``sparsebert.pruning.prune_bert_`` works after a bare
``import sparsebert`` without making that import load torch or the converter.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._version import __version__
from .errors import ModelFormatError, SparseBertError, UnsupportedModelError

# name -> (module, attribute or None for the module itself), resolved on first access
_LAZY = {
    "SparseEngine": ("sparsebert.engine", "SparseEngine"),
    "export": ("sparsebert.convert", "export"),
    "available_isas": ("sparsebert._native", "available_isas"),
    "default_isa": ("sparsebert._native", "default_isa"),
    "kernels": ("sparsebert.kernels", None),
    "pipeline": ("sparsebert.pipelines", "pipeline"),
}
# The public submodules, reachable as attributes after `import sparsebert` (each imported on first access).
SUBMODULES = ("answer_spans", "bench", "cli", "cli_args", "convert", "demo", "demo_command", "engine", "errors",
              "export_command", "extras", "fill_mask", "format", "info_command", "kernels", "pipelines", "pruning",
              "ray_data", "rerank", "run_command", "serve", "serve_command", "spelling", "text_encoding",
              "tokenizer_text", "tuning")
_LAZY.update({name: (f"sparsebert.{name}", None) for name in SUBMODULES if name not in _LAZY})

__all__ = [
    "ModelFormatError",
    "SparseBertError",
    "SparseEngine",
    "UnsupportedModelError",
    "__version__",
    "available_isas",
    "default_isa",
    "export",
    "kernels",
    "pipeline",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'sparsebert' has no attribute {name!r}")
    module_name, attribute = _LAZY[name]
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
