"""The benchmark harness: sparsebert against ONNX Runtime, PyTorch and (optionally) DeepSparse.

    from sparsebert import bench
    result = bench.run_engine_bench(bench.random_source("bert-base", sparsity=0.9), batch=1, seq=128, threads=2)
    print(bench.engine_text(result))

Every figure is a same-run comparison: the engines run the same weights on the same inputs, interleaved
round-robin in one process or (``mode="isolated"``) each alone in its own process, one after another, and the
harness reports medians, p10 and ratios, because the machines this is meant for are shared and noisy and
absolute milliseconds from different runs do not compare.

One job per module:

* ``models``       random BERT configs, pruned random models, a packed file -> equivalent ``transformers`` model
* ``onnx_export``  the wrapper module and ``torch.onnx.export`` call that peers run
* ``runners``      one "run once on these inputs" callable per engine (sparsebert, onnxruntime, pytorch)
* ``timing``       warm-up, interleaved round-robin timing and the statistics of it
* ``flops``        dense-equivalent and real FLOP counts of an encoder run
* ``deepsparse_peer``  the optional DeepSparse peer, run in its own interpreter (``_deepsparse_driver.py``)
* ``environment``  what a result must name: CPU, ISA, threads, commit, versions, date, command
* ``engine_bench`` / ``sweep`` / ``kernel_bench``   the three benchmarks
* ``isolated``, ``isolated_worker``  each engine timed alone in a fresh process of its own
* ``report``, ``sweep_report``, ``plot``          Markdown / text tables, JSON, PNG plots
* ``cli``          the ``sparsebert bench`` subcommand

Importing this package is cheap; torch, transformers, onnxruntime and matplotlib are imported by the
functions that need them.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> module that defines it, resolved on first access (keeps `import sparsebert.bench` light)
_LAZY = {
    "ModelSource": "sparsebert.bench.models",
    "RANDOM_CONFIGS": "sparsebert.bench.models",
    "random_source": "sparsebert.bench.models",
    "file_source": "sparsebert.bench.models",
    "to_transformers": "sparsebert.bench.models",
    "dense_weight": "sparsebert.bench.models",
    "export_onnx": "sparsebert.bench.onnx_export",
    "encoder_flops": "sparsebert.bench.flops",
    "run_engine_bench": "sparsebert.bench.engine_bench",
    "run_sweep": "sparsebert.bench.sweep",
    "run_kernel_bench": "sparsebert.bench.kernel_bench",
    "engine_text": "sparsebert.bench.report",
    "sweep_markdown": "sparsebert.bench.sweep_report",
    "kernel_markdown": "sparsebert.bench.report",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'sparsebert.bench' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
