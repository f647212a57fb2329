"""Shared set-up of the pytest-benchmark suites (``pytest benchmarks/``): run separately from ``pytest``.

The suites use the harness (``sparsebert.bench``) for everything: the models, the peers and the interleaved
ratios are the ones ``sparsebert bench`` reports.  pytest-benchmark's own columns time sparsebert alone; the
same-run ratios to ONNX Runtime and PyTorch go into ``extra_info`` (``--benchmark-json`` keeps them), since
figures from different moments on a shared machine do not compare.

Options: ``--bench-threads T`` (default: the CPUs available), ``--bench-runs R`` (default 20),
``--bench-seq S`` (default 128), ``--bench-batch B`` (default 1).
"""

from __future__ import annotations

import os

# No model is ever downloaded: random weights only.  Set before transformers is imported anywhere.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from dataclasses import dataclass, field
from typing import Any

import pytest

from sparsebert.bench import defaults


def pytest_addoption(parser):
    group = parser.getgroup("sparsebert benchmarks")
    group.addoption("--bench-threads", type=int, default=None, help="threads for every engine (default: CPUs)")
    group.addoption("--bench-runs", type=int, default=defaults.RUNS, help="timed runs per engine")
    group.addoption("--bench-seq", type=int, default=128, help="sequence length")
    group.addoption("--bench-batch", type=int, default=1, help="batch size")


@dataclass
class Settings:
    threads: int
    runs: int
    batch: int
    seq: int
    warmup: int = defaults.WARMUP
    pause_s: float = defaults.PAUSE_MS / 1e3


@pytest.fixture(scope="session")
def settings(request) -> Settings:
    threads = request.config.getoption("--bench-threads")
    if threads is None:
        try:
            threads = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            threads = os.cpu_count() or 1
    return Settings(threads=threads, runs=request.config.getoption("--bench-runs"),
                    batch=request.config.getoption("--bench-batch"), seq=request.config.getoption("--bench-seq"))


@pytest.fixture(scope="session")
def environment(settings) -> dict[str, Any]:
    from sparsebert.bench.environment import environment as env

    return env(threads=settings.threads, command="pytest benchmarks/")


@dataclass
class Prepared:
    """One pruned model, ready in every engine (built by the harness), with the inputs they all get."""

    description: str
    inputs: dict
    runners: dict  # name -> sparsebert.bench.runners.Runner
    linears: list
    config: dict
    hidden: dict = field(default_factory=dict)


@pytest.fixture(scope="session")
def bert_base(settings, tmp_path_factory):
    """``bert_base(sparsity, block)`` -> Prepared: random BERT-base pruned so, in sparsebert, ONNX Runtime and
    PyTorch (the latter two rebuilt from the packed file, as ``sparsebert bench`` does).  Cached per case."""
    from sparsebert.bench import onnx_export, runners
    from sparsebert.bench.models import random_model, random_source, to_transformers
    from sparsebert.format import read_model

    workdir = tmp_path_factory.mktemp("bert_base")
    dense = random_model("bert-base", seed=0)
    cache: dict = {}
    sources = []

    def prepare(sparsity: float, block: int) -> Prepared:
        key = (sparsity, block)
        if key in cache:
            return cache[key]
        source = random_source("bert-base", sparsity, block, model=dense, workdir=str(workdir))
        sources.append(source)
        packed = read_model(source.path)
        inputs = runners.make_inputs(settings.batch, settings.seq, packed.config["vocab_size"])
        model = to_transformers(packed)
        onnx_path = str(workdir / f"bert-base-{sparsity:g}-block{block}.onnx")
        onnx_export.export_onnx(model, packed.config, onnx_path)
        made = {
            "sparsebert": runners.sparsebert_runner(source.path, inputs, settings.threads),
            "onnxruntime": runners.onnxruntime_runner(onnx_path, inputs, settings.threads),
            "pytorch": runners.pytorch_runner(onnx_export.bert_outputs(model, packed.config), inputs,
                                              settings.threads),
        }
        prepared = Prepared(source.description, inputs, made,
                            [{"name": n, **m} for n, m in packed.linears.items()], dict(packed.config))
        prepared.hidden = {name: r.hidden(r.run()) for name, r in made.items()}
        cache[key] = prepared
        return prepared

    yield prepare
    for source in sources:
        source.close()
