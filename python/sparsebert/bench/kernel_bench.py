"""The sparse GEMM kernels alone, on BERT's layer shapes, against the machine's FMA peak.

``PackedLinear.benchmark`` times ``forward`` with activations already in the engine's layout, so these
figures are the kernels' own, without the encoder around them.  The layouts of one (shape, tokens, threads)
cell are timed in alternating chunks, so "speed-up vs dense" is a same-window ratio like everything else.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .. import _native
from ..format.layouts import LAYOUTS
from ..kernels import default_isa, pack
from ..pruning import magnitude_prune
from .defaults import (KERNEL_LAYOUTS as DEFAULT_LAYOUTS, KERNEL_SHAPES as DEFAULT_SHAPES,
                       KERNEL_SPARSITY as DEFAULT_SPARSITY, KERNEL_THREADS as DEFAULT_THREADS,
                       KERNEL_TOKENS as DEFAULT_TOKENS, INT8_PEAK_FACTOR)
from .environment import environment

CHUNK = 5  # timed runs per call before switching layout: long enough to amortise the pool start-up
PEAK_SECONDS = 0.2
PEAK_TRIES = 3  # the peak is a maximum: keep the best of a few tries on a noisy machine
BLOCK_LAYOUTS = ("block4", "block4_int8")


def fma_peak(isa: str) -> float:
    """Best of a few single-thread FMA peak measurements of ``isa`` (GFLOP/s)."""
    core = _native.core()
    return max(core.fma_peak_gflops(isa, PEAK_SECONDS) for _ in range(PEAK_TRIES))


def make_weight(n: int, k: int, layout: str, sparsity: float, rng: np.random.Generator) -> np.ndarray:
    """A random [n, k] weight pruned for ``layout``: dense stays dense, the 4-block layouts drop whole 4-blocks."""
    weight = rng.standard_normal((n, k), dtype=np.float32)
    if layout == "dense":
        return weight
    return magnitude_prune(weight, sparsity, 4 if layout in BLOCK_LAYOUTS else 1)


def layout_label(layout: str, sparsity: float) -> str:
    if layout == "dense":
        return "dense"
    kind = {"block4": "4-block", "block4_int8": "4-block int8"}.get(layout, "unstructured")
    return f"{sparsity:.0%} {kind}"


def peak_factor(layout: str) -> int:
    """The layout's peak in units of the fp32 FMA peak."""
    return INT8_PEAK_FACTOR if layout == "block4_int8" else 1


def run_kernel_bench(shapes: Sequence[tuple[int, int]] = DEFAULT_SHAPES, tokens: Sequence[int] = DEFAULT_TOKENS,
                     layouts: Sequence[str] = DEFAULT_LAYOUTS, sparsity: float = DEFAULT_SPARSITY,
                     threads: Sequence[int] = DEFAULT_THREADS, runs: int = 20, isa: str | None = None,
                     seed: int = 0, command: str | None = None,
                     log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Time every (shape, tokens, layout, threads); returns rows with ms, GFLOP/s and the fraction of peak."""
    say = log if log is not None else (lambda _msg: None)
    bad = [lay for lay in layouts if lay not in LAYOUTS]
    if bad:
        raise ValueError(f"unknown layout(s) {', '.join(bad)}; choose from {', '.join(LAYOUTS)}")
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    isa = isa or default_isa()
    peak = fma_peak(isa)
    say(f"single-thread FMA peak ({isa}): {peak:.1f} GFLOP/s")
    rng = np.random.default_rng(seed)
    rows = []
    for n, k in shapes:
        packed = {}
        for lay in layouts:
            weight = make_weight(n, k, lay, sparsity, rng)
            packed[lay] = (pack(weight, layout=lay), int(np.count_nonzero(weight)))
        for t in tokens:
            for th in threads:
                say(f"{n} x {k}, {t} tokens, {th} thread(s)")
                times: dict[str, list[float]] = {lay: [] for lay in layouts}
                for _ in range(math.ceil(runs / CHUNK)):
                    for lay in layouts:
                        seconds = packed[lay][0].benchmark(t, runs=CHUNK, isa=isa, num_threads=th)
                        times[lay] += list(seconds)
                medians = {lay: float(np.median(v[:runs])) * 1e3 for lay, v in times.items()}
                for lay in layouts:
                    ms, nnz = medians[lay], packed[lay][1]
                    real = 2.0 * t * nnz / (ms * 1e-3) / 1e9
                    rows.append({
                        "n": n, "k": k, "tokens": t, "layout": lay, "layout_label": layout_label(lay, sparsity),
                        "threads": th, "nnz": nnz, "sparsity": 1.0 - nnz / (n * k),
                        "median_ms": ms, "p10_ms": float(np.percentile(times[lay][:runs], 10)) * 1e3,
                        "real_gflops": real, "dense_gflops": 2.0 * t * n * k / (ms * 1e-3) / 1e9,
                        "peak_fraction": real / (peak * th * peak_factor(lay)),
                        "speedup_vs_dense": medians["dense"] / ms if "dense" in medians and lay != "dense" else None,
                    })
    return {
        "kind": "kernels",
        "environment": environment(isa=isa, threads=list(threads), command=command),
        "isa": isa,
        "runs": runs,
        "sparsity": sparsity,
        "fma_peak_gflops": {isa: peak},
        "peak_note": "single-thread peak measured with a register-resident FMA loop; multiplied by the threads",
        "rows": rows,
    }


__all__ = ["DEFAULT_LAYOUTS", "DEFAULT_SHAPES", "DEFAULT_SPARSITY", "DEFAULT_THREADS", "DEFAULT_TOKENS",
           "INT8_PEAK_FACTOR", "fma_peak", "peak_factor",
           "run_kernel_bench"]
