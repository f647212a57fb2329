"""The sparse GEMM kernels on BERT-base / BERT-large layer shapes: dense, 90% unstructured, 90% 4-block, fp32 and int8.

    pytest benchmarks/test_kernels.py [--benchmark-json out.json]

The kernel-only figures (``PackedLinear.benchmark``: activations already in the engine's layout) are in
``extra_info``: median ms, real GFLOP/s (2·T·nnz), dense-equivalent GFLOP/s (2·T·N·K), fraction of the FMA
peak and the speed-up over the dense layout timed in the same test.  pytest-benchmark's own columns time one
call of ``PackedLinear.benchmark(tokens, runs=CALL_RUNS)``, which also sets up the activations and the
thread pool: use them to compare runs of this suite, and ``extra_info`` for the kernel's speed.
"""

from __future__ import annotations

import numpy as np
import pytest

from sparsebert.bench import defaults
from sparsebert.bench.kernel_bench import fma_peak, layout_label, make_weight, peak_factor

CALL_RUNS = 5  # kernel runs per timed call
SPARSITY = defaults.KERNEL_SPARSITY


@pytest.fixture(scope="module")
def peak():
    from sparsebert.kernels import default_isa

    isa = default_isa()
    return isa, fma_peak(isa)


@pytest.fixture(scope="module")
def packed():
    """(n, k, layout) -> (PackedLinear, true nonzeros), built once per module."""
    from sparsebert.kernels import pack

    rng = np.random.default_rng(0)
    cache = {}

    def get(n: int, k: int, layout: str):
        if (n, k, layout) not in cache:
            weight = make_weight(n, k, layout, SPARSITY, rng)
            cache[n, k, layout] = (pack(weight, layout=layout), int(np.count_nonzero(weight)))
        return cache[n, k, layout]

    return get


@pytest.mark.parametrize("threads", defaults.KERNEL_THREADS)
@pytest.mark.parametrize("tokens", defaults.KERNEL_TOKENS)
@pytest.mark.parametrize("layout", defaults.KERNEL_LAYOUTS)
@pytest.mark.parametrize("shape", defaults.KERNEL_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_kernel(benchmark, shape, layout, tokens, threads, packed, peak):
    isa, peak_gflops = peak
    n, k = shape
    linear, nnz = packed(n, k, layout)
    dense, _ = packed(n, k, "dense")
    # The dense layout, timed (untimed by pytest-benchmark) between the rounds, gives a same-window speed-up.
    runs: list[float] = []
    dense_runs: list[float] = []

    def call():
        runs.extend(linear.benchmark(tokens, runs=CALL_RUNS, isa=isa, num_threads=threads))

    def dense_between():  # pedantic's setup: runs before every round, untimed
        if layout != "dense":
            dense_runs.extend(dense.benchmark(tokens, runs=CALL_RUNS, isa=isa, num_threads=threads))

    benchmark.group = f"{n}x{k}, {tokens} tokens, {threads} thread(s)"
    benchmark.pedantic(call, setup=dense_between, rounds=4, warmup_rounds=1)
    ms = float(np.median(runs)) * 1e3
    real = 2.0 * tokens * nnz / (ms * 1e-3) / 1e9
    benchmark.extra_info.update({
        "layout": layout_label(layout, SPARSITY),
        "isa": isa,
        "threads": threads,
        "kernel_median_ms": ms,
        "kernel_p10_ms": float(np.percentile(runs, 10)) * 1e3,
        "real_gflops": real,
        "dense_gflops": 2.0 * tokens * n * k / (ms * 1e-3) / 1e9,
        "peak_fraction": real / (peak_gflops * threads * peak_factor(layout)),
        "fma_peak_gflops_single_thread": peak_gflops,
        "speedup_vs_dense": float(np.median(dense_runs)) * 1e3 / ms if dense_runs else None,
        "timed_call": f"PackedLinear.benchmark(tokens, runs={CALL_RUNS})",
    })
    assert real > 0
