"""Interleaved round-robin timing and its statistics.

Why interleave: on a shared, throttling 2-vCPU machine the speed available changes from second to second.
Timing engine A for 20 runs and then engine B for 20 runs compares two different machines; alternating them
run by run exposes both to the same conditions, so their *ratio* is meaningful even when the absolute times
drift.  The order rotates every round so no engine always runs right after the same neighbour (a peer's
thread pool may still be spinning when the next engine starts).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

import numpy as np


def interleaved(fns: Mapping[str, Callable[[], Any]], runs: int, warmup: int = 3, pause_s: float = 0.0,
                rewarm: bool = True, self_timed: Collection[str] = ()) -> dict[str, list[float]]:
    """Call each function ``warmup`` times, then ``runs`` times round-robin; milliseconds per call by name.

    ``pause_s`` sleeps before every turn (outside the timed span), which lets the previous engine's spinning
    worker threads go idle first.  With ``rewarm`` each timed call directly follows an untimed call of the
    same function, so it is timed in its steady state, as in a serving loop (its own data in the caches, its
    own thread pool awake) rather than in whatever state the previous engine left: a 90%-sparse BERT-base's
    weights fit in a large L3 and a dense one's do not, so cold calls would tax the engines unequally.
    The functions named in ``self_timed`` return their own duration in milliseconds (an engine in another
    process, timed there), which is recorded instead of the wall time of the call.
    """
    if runs < 1 or warmup < 0:
        raise ValueError(f"runs must be >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(runs):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            if pause_s:
                time.sleep(pause_s)
            fn = fns[name]
            if rewarm:
                fn()
            t0 = time.perf_counter_ns()
            measured = fn()
            elapsed = (time.perf_counter_ns() - t0) / 1e6
            times[name].append(float(measured) if name in self_timed else elapsed)
    return times


def sequential(fn: Callable[[], Any], runs: int, warmup: int = 3) -> list[float]:
    """``runs`` back-to-back timed calls of one function after ``warmup`` untimed ones (milliseconds)."""
    return interleaved({"fn": fn}, runs, warmup, 0.0, rewarm=False)["fn"]


def summarize(times_ms: list[float]) -> dict[str, Any]:
    """Median, p10, p90, mean and min of a list of milliseconds, plus the raw list."""
    t = np.asarray(times_ms, dtype=np.float64)
    if t.size == 0:
        raise ValueError("no timings to summarize")
    return {
        "median_ms": float(np.median(t)),
        "p10_ms": float(np.percentile(t, 10)),
        "p90_ms": float(np.percentile(t, 90)),
        "mean_ms": float(t.mean()),
        "min_ms": float(t.min()),
        "runs": int(t.size),
        "times_ms": [round(float(x), 4) for x in t],
    }


__all__ = ["interleaved", "sequential", "summarize"]
