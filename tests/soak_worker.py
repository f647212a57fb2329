"""A bounded soak: 4 threads run random shapes on an fp32 and an int8 engine of different tasks for a while; in
the middle the main thread forks a child that uses both engines, and is itself interrupted by Ctrl-C during a long
call. Every result must equal the serial one, the child must answer, the resident memory must stay flat, and
nothing may hang (tests/test_hazards.py runs this in a process of its own). Prints a JSON summary last.

    python tests/soak_worker.py SECONDS MODEL_FILE...
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import threading
import time
import warnings

import numpy as np

from sparsebert import SparseEngine


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def random_batch(rng: random.Random, vocab: int) -> dict[str, np.ndarray]:
    batch, seq = rng.randint(1, 12), rng.randint(1, 70)
    ids = np.array([[rng.randrange(1, vocab) for _ in range(seq)] for _ in range(batch)], np.int64)
    mask = np.ones_like(ids)
    for row in mask:
        row[rng.randint(1, seq):] = 0
    return {"input_ids": ids, "attention_mask": mask}


def fork_and_check(engines: list, cases: list) -> int:
    warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads: the point of the soak
    pid = os.fork()
    if pid == 0:
        signal.alarm(30)
        ok = all(np.array_equal(engines[e].run(x)[k], want[k]) for e, x, want in cases[:6] for k in want)
        os._exit(0 if ok else 3)
    _, status = os.waitpid(pid, 0)
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status)


def main() -> None:
    seconds, paths = float(sys.argv[1]), sys.argv[2:]
    engines = [SparseEngine.load(p, num_threads=2) for p in paths]
    rng = random.Random(0)
    cases = []
    for i in range(32):
        e = i % len(engines)
        x = random_batch(rng, engines[e].config["vocab_size"])
        cases.append((e, x, engines[e].run(x)))
    mismatches, calls, stop = [], [0] * 4, threading.Event()

    def worker(index: int) -> None:
        local = random.Random(index)
        while not stop.is_set():
            e, x, want = local.choice(cases)
            out = engines[e].run(x)
            if any(not np.array_equal(out[k], want[k]) for k in want):
                mismatches.append((index, e))
            calls[index] += 1

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(4)]
    for t in threads:
        t.start()
    time.sleep(min(5.0, seconds / 4))
    baseline, samples = rss(), []
    deadline = time.monotonic() + seconds
    child = interrupted = None
    while time.monotonic() < deadline:
        time.sleep(1.0)
        samples.append(rss())
        if child is None and time.monotonic() > deadline - seconds / 2:
            child = fork_and_check(engines, cases)
            threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
            long_call = {"input_ids": np.ones((400, 64), np.int64)}
            try:
                for _ in range(200):
                    engines[0].run(long_call)
                interrupted = False
            except KeyboardInterrupt:
                interrupted = True
    stop.set()
    for t in threads:
        t.join(timeout=60)
    print(json.dumps({"calls": calls, "mismatches": mismatches[:10], "child": child, "interrupted": interrupted,
                      "rss_growth_bytes": max(samples) - baseline, "alive": [t.is_alive() for t in threads]}))


if __name__ == "__main__":
    main()
