"""Isolated timing: each engine alone in a fresh process of its own, the engines one after another.

Why a second mode: on a machine with few cores, an engine's worker threads can keep spinning after its call
returns (ONNX Runtime's do, for tens of milliseconds), and a call another engine makes meanwhile in the same
process runs on stolen cores (2.4x slower on 2 vCPUs). The interleaved mode's pause lets such threads go idle;
here no other engine is alive at all, which proves whether the pause was enough. What it gives up: the engines
run minutes apart, so a machine whose speed drifts favours one of them (the interleaved mode's strength).

Each engine's worker (``isolated_worker``, ``python -m``) builds its runner from files the harness wrote once
(the packed model, its fp32 twin, the ONNX graphs, the inputs) with ``runners.runner_from_files``, returns its
last_hidden_state for the agreement check and times itself with ``timing.sequential``. DeepSparse already runs
in a process of its own and is timed alone after the others.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import timing
from .deepsparse_peer import deepsparse_runner

WORKER_MODULE = "sparsebert.bench.isolated_worker"
TIMEOUT_S = 3600  # a bert-large sweep point with many runs takes minutes; a hung worker must still end
METHOD = "each engine alone in its own process, one after another"
# This package's root, put first on the worker's path so that it runs this very sparsebert (not an installed one).
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class IsolatedRunError(RuntimeError):
    """An engine's worker process failed (its message says how)."""


@dataclass
class Alone:
    """One engine's measurement in its own process."""

    label: str
    info: dict[str, Any]
    times_ms: list[float]
    hidden: np.ndarray  # last_hidden_state of its first call, for the agreement check
    profile_ms: dict[str, float] = field(default_factory=dict)  # sparsebert's per-op profile, if asked


def _worker_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
    return env


def time_alone(name: str, files: dict[str, str], inputs_path: str, threads: int, isa: str | None, runs: int,
               warmup: int, workdir: str, profile_runs: int = 0) -> Alone:
    """Run engine ``name`` in a fresh worker process on the inputs saved at ``inputs_path`` (``np.savez``):
    one call for its output, ``warmup`` untimed calls, ``runs`` timed ones back to back."""
    stem = os.path.join(workdir, f"isolated-{name}")
    spec = {"engine": name, "files": files, "inputs": inputs_path, "threads": threads, "isa": isa, "runs": runs,
            "warmup": warmup, "profile_runs": profile_runs, "hidden_out": stem + ".hidden.npy",
            "result_out": stem + ".result.json"}
    with open(stem + ".spec.json", "w", encoding="utf-8") as f:
        json.dump(spec, f)
    try:
        proc = subprocess.run([sys.executable, "-m", WORKER_MODULE, stem + ".spec.json"], env=_worker_env(),
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise IsolatedRunError(f"{name}'s isolated worker did not finish within {TIMEOUT_S} s") from None
    try:
        with open(spec["result_out"], encoding="utf-8") as f:
            answer = json.load(f)
    except (OSError, json.JSONDecodeError):
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:]) or "no message"
        raise IsolatedRunError(f"{name}'s isolated worker exited (code {proc.returncode}): {tail}") from None
    if "error" in answer:
        # A missing optional dependency stays an ImportError: the command line reports it as a user's matter.
        kind = ImportError if answer.get("type") in ("ImportError", "ModuleNotFoundError") else IsolatedRunError
        raise kind(f"{name} (isolated worker): {answer['error']}")
    return Alone(answer["label"], answer["info"], answer["times_ms"], np.load(spec["hidden_out"]),
                 answer.get("profile_ms") or {})


def run_isolated(names: Sequence[str], files: dict[str, str], inputs: dict[str, np.ndarray], threads: int,
                 isa: str | None, runs: int, warmup: int, workdir: str, profile_runs: int = 0,
                 log: Callable[[str], None] = lambda _msg: None) -> dict[str, Alone]:
    """``time_alone`` for each engine in ``names``, in that order (sparsebert's worker also profiles)."""
    inputs_path = os.path.join(workdir, "isolated-inputs.npz")
    np.savez(inputs_path, **inputs)
    measured = {}
    for name in names:
        log(f"timing {name} alone in its own process: {warmup} warm-up + {runs} runs")
        measured[name] = time_alone(name, files, inputs_path, threads, isa, runs, warmup, workdir,
                                    profile_runs if name == "sparsebert" else 0)
    return measured


def deepsparse_alone(python: str, onnx_path: str, inputs: dict[str, np.ndarray], threads: int, runs: int,
                     warmup: int) -> Alone:
    """DeepSparse, in its own interpreter as always, timed with no other engine running."""
    runner = deepsparse_runner(python, onnx_path, inputs, threads)
    try:
        times = timing.interleaved({"deepsparse": runner.run}, runs, warmup, 0.0, rewarm=False,
                                   self_timed={"deepsparse"})["deepsparse"]
        hidden = runner.hidden(None)
    finally:
        runner.close()
    return Alone(runner.label, runner.info, times, np.asarray(hidden, np.float32))


__all__ = ["METHOD", "Alone", "IsolatedRunError", "deepsparse_alone", "run_isolated", "time_alone"]
