"""Working memory of one engine call, measured in a process of its own (tests/test_memory.py). Prints a JSON
summary as its last line.

    python tests/memory_worker.py SCENARIO MODEL_FILE [ARGS...]
"""

from __future__ import annotations

import gc
import json
import os
import resource
import sys

import numpy as np

from sparsebert import SparseEngine, _native


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as f:  # Linux: "5" resets the peak resident set size (VmHWM)
        f.write("5")


def peak_rss() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def batch(engine: SparseEngine, sequences: int, seq: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"input_ids": rng.integers(1, engine.config["vocab_size"], size=(sequences, seq)).astype(np.int32)}


def under_address_limit(path: str, limit_gib: str, sequences: str, seq: str) -> dict:
    """A call whose outputs alone take most of the limit succeeds: the working memory is bounded, not the batch."""
    limit = int(float(limit_gib) * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    engine = SparseEngine.load(path, num_threads=2)
    out = engine.run(batch(engine, int(sequences), int(seq)))["last_hidden_state"]
    return {"shape": list(out.shape), "finite": bool(np.isfinite(out[:, :4]).all()), "output_bytes": out.nbytes}


def working_set(path: str, sequences: str, seq: str, max_batch_tokens: str = "4096") -> dict:
    """Peak resident memory of one call beyond the returned arrays, and what stays after it."""
    engine = SparseEngine.load(path, num_threads=2, max_batch_tokens=int(max_batch_tokens))
    engine.run(batch(engine, 1, 16))  # threads and small buffers exist before measuring
    inputs = batch(engine, int(sequences), int(seq))
    before = rss()
    reset_peak_rss()
    out = engine.run(inputs)
    outputs = sum(a.nbytes for a in out.values())
    peak = peak_rss()
    del out
    return {"working_bytes": peak - before - outputs, "kept_bytes": rss() - before, "tokens": inputs["input_ids"].size}


def loading(path: str) -> dict:
    """Resident memory a load adds while loading (peak) and once it has returned (what the engine keeps)."""
    _native.core()  # the extension's own pages are not the model's
    before = rss()
    reset_peak_rss()
    engine = SparseEngine.load(path, num_threads=1)
    gc.collect()
    kept = rss() - before
    return {"kept_bytes": kept, "peak_bytes": peak_rss() - before, "isa": engine.isa}


SCENARIOS = {f.__name__: f for f in (under_address_limit, working_set, loading)}

if __name__ == "__main__":
    scenario, *args = sys.argv[1:]
    print(json.dumps(SCENARIOS[scenario](*args)))
