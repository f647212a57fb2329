"""Latency against sparsity: one random dense model, pruned to each sparsity in turn, every engine at each point.

One dense model is built once and each point prunes a fresh copy of it, so the points differ only in how
many weights are zero.  At each point all engines are re-measured together (interleaved), even the dense
peers whose latency cannot depend on sparsity, because only same-run ratios survive a noisy machine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .engine_bench import DEFAULT_PAUSE_MS, DEFAULT_RUNS, DEFAULT_WARMUP, run_engine_bench
from .environment import environment
from .models import random_model, random_source
from .defaults import PEERS, SPARSITIES as DEFAULT_SPARSITIES


def run_sweep(model_name: str = "bert-base", sparsities: Sequence[float] = DEFAULT_SPARSITIES, block: int = 1,
              batch: int = 1, seq: int = 128, threads: int = 2, runs: int = DEFAULT_RUNS,
              warmup: int = DEFAULT_WARMUP, peers: Sequence[str] = PEERS, isa: str | None = None,
              deepsparse_python: str | None = None, pause_ms: float = DEFAULT_PAUSE_MS, layout: str = "auto",
              seed: int = 0, head: str = "none", profile_runs: int = 0, command: str | None = None,
              workdir: str | None = None, log: Callable[[str], None] | None = None,
              rewarm: bool = True) -> dict[str, Any]:
    """Benchmark a random ``model_name`` at each sparsity; returns the sweep result (points are engine results)."""
    say = log if log is not None else (lambda _msg: None)
    sparsities = [float(s) for s in sparsities]
    if not sparsities or any(not 0.0 <= s < 1.0 for s in sparsities):
        raise ValueError(f"sparsities must be a non-empty list of numbers in [0, 1), got {sparsities}")
    say(f"building a random {model_name}")
    dense = random_model(model_name, seed, head)
    points = []
    for i, sparsity in enumerate(sparsities):
        say(f"[{i + 1}/{len(sparsities)}] sparsity {sparsity:.0%}: pruning and exporting")
        with random_source(model_name, sparsity, block, seed, head, layout, workdir, model=dense) as source:
            point = run_engine_bench(source, batch, seq, threads, runs, warmup, peers, isa, deepsparse_python,
                                     pause_ms, profile_runs, command, seed, workdir, log, rewarm)
        point["sparsity"] = sparsity
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
        "batch": batch,
        "seq": seq,
        "threads": threads,
        "runs": runs,
        "warmup": warmup,
        "pause_ms": pause_ms,
        "rewarm": rewarm,
        "engines_run": engines_run,
        "points": points,
    }


__all__ = ["DEFAULT_SPARSITIES", "run_sweep"]
