"""Latency against sparsity: one random dense model, pruned to each sparsity in turn, every engine at each point
(and, when asked, at each precision and batch size: the grid of the README's performance table in one command).

One dense model is built once and each point prunes a fresh copy of it, so the points differ only in how
many weights are zero.  At each point all engines are re-measured (in the timing mode asked for), even the dense
peers whose latency cannot depend on sparsity, because only same-run ratios survive a noisy machine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..format.layouts import BLOCK
from .defaults import MODE, PEERS, SPARSITIES as DEFAULT_SPARSITIES
from .engine_bench import DEFAULT_PAUSE_MS, DEFAULT_RUNS, DEFAULT_WARMUP, run_engine_bench
from .environment import environment
from .models import random_model, random_source

PRECISIONS = ("fp32", "int8")


def _batches(batch: int | Sequence[int]) -> list[int]:
    return [batch] if isinstance(batch, int) and not isinstance(batch, bool) else list(batch)


def run_sweep(model_name: str = "bert-base", sparsities: Sequence[float] = DEFAULT_SPARSITIES, block: int = 1,
              batch: int | Sequence[int] = 1, seq: int = 128, threads: int = 2, runs: int = DEFAULT_RUNS,
              warmup: int = DEFAULT_WARMUP, peers: Sequence[str] = PEERS, isa: str | None = None,
              deepsparse_python: str | None = None, pause_ms: float = DEFAULT_PAUSE_MS, layout: str = "auto",
              seed: int = 0, head: str = "none", profile_runs: int = 0, command: str | None = None,
              workdir: str | None = None, log: Callable[[str], None] | None = None,
              rewarm: bool = True, precisions: Sequence[str] = ("fp32",), mode: str = MODE) -> dict[str, Any]:
    """Benchmark a random ``model_name`` at each precision ("fp32", "int8": encoder linears as int8 4-blocks),
    batch size (one or several) and sparsity, in that nesting; returns the sweep result (points are engine
    results, each naming its precision and batch)."""
    say = log if log is not None else (lambda _msg: None)
    sparsities = [float(s) for s in sparsities]
    if not sparsities or any(not 0.0 <= s < 1.0 for s in sparsities):
        raise ValueError(f"sparsities must be a non-empty list of numbers in [0, 1), got {sparsities}")
    batches, precisions = _batches(batch), list(dict.fromkeys(precisions))
    if not batches or not precisions or any(p not in PRECISIONS for p in precisions):
        raise ValueError(f"a sweep needs batch sizes and precisions from {', '.join(PRECISIONS)}, got {batches}, "
                         f"{precisions}")
    if "int8" in precisions and block != BLOCK:
        raise ValueError("int8 runs 4-block weights: sweep it with block=4 (--block 4), which the fp32 points then "
                         "share")
    say(f"building a random {model_name}")
    dense = random_model(model_name, seed, head)
    grid = [(p, b, s) for p in precisions for b in batches for s in sparsities]
    points = []
    for i, (precision, size, sparsity) in enumerate(grid):
        say(f"[{i + 1}/{len(grid)}] {precision}, batch {size}, sparsity {sparsity:.0%}: pruning and exporting")
        quantize = "int8" if precision == "int8" else None
        with random_source(model_name, sparsity, block, seed, head, layout, workdir, model=dense,
                           quantize=quantize) as source:
            point = run_engine_bench(source, size, seq, threads, runs, warmup, peers, isa, deepsparse_python,
                                     pause_ms, profile_runs, command, seed, workdir, log, rewarm, mode)
        point.update(sparsity=sparsity, precision=precision)
        # The machine record lives once at the top; keep only what changes from point to point.
        point["load_average"] = point.pop("environment")["load_average"]
        points.append(point)
        e = point["engines"]
        say("    " + ", ".join(f"{name} {row['median_ms']:.1f} ms" for name, row in e.items()))
    first = points[0]
    engines_run = list(dict.fromkeys(name for p in points for name in p["engines"]))
    return {
        "kind": "sweep",
        "environment": environment(isa=first["engines"]["sparsebert"]["info"]["isa"], threads=threads,
                                   command=command),
        "model_name": model_name,
        "block": block,
        "layout": layout,
        "seed": seed,
        "batch": batches[0],
        "batches": batches,
        "precisions": precisions,
        "seq": seq,
        "threads": threads,
        "runs": runs,
        "warmup": warmup,
        "pause_ms": pause_ms,
        "rewarm": rewarm,
        "mode": mode,
        "engines_run": engines_run,
        "points": points,
    }


__all__ = ["DEFAULT_SPARSITIES", "PRECISIONS", "run_sweep"]
