"""One engine, alone in this process: ``python -m sparsebert.bench.isolated_worker SPEC.json`` (see ``isolated``).

SPEC names the engine, the files its runner is built from, the saved inputs, threads, ISA, runs and warm-up, and
where to write its first call's last_hidden_state and its result (label, info, milliseconds, profile) or the
error that stopped it.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import numpy as np

from . import runners, timing


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    with np.load(spec["inputs"]) as saved:
        inputs = {name: np.array(saved[name]) for name in saved.files}
    runner = runners.runner_from_files(spec["engine"], spec["files"], inputs, spec["threads"], spec["isa"])
    np.save(spec["hidden_out"], np.asarray(runner.hidden(runner.run()), dtype=np.float32))
    times = timing.sequential(runner.run, spec["runs"], spec["warmup"])
    profile = {}
    if spec.get("profile_runs") and runner.engine is not None:
        profile = runner.engine.profile(inputs, spec["profile_runs"])
    info = {**runner.info, "process": f"isolated worker, pid {os.getpid()}"}
    return {"label": runner.label, "info": info, "times_ms": times, "profile_ms": profile}


def main(argv: list[str]) -> int:
    with open(argv[0], encoding="utf-8") as f:
        spec = json.load(f)
    try:
        answer = measure(spec)
    except Exception as exc:  # reported to the harness, which raises it there
        answer = {"error": " ".join(f"{type(exc).__name__}: {exc}".split()), "type": type(exc).__name__}
    tmp = spec["result_out"] + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(answer, f)
    os.replace(tmp, spec["result_out"])
    return 0 if "error" not in answer else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
