"""Production hazards, each in a process of its own so that a crash, an abort or a hang fails the test instead of
the runner (tests/test_hazards.py). Prints a JSON summary as its last line.

    python tests/hazard_worker.py SCENARIO MODEL_FILE [ARGS...]
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import warnings

import numpy as np

from sparsebert import SparseEngine


def inputs(batch: int, seq: int, vocab: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"input_ids": rng.integers(1, vocab, size=(batch, seq)).astype(np.int32),
            "attention_mask": np.ones((batch, seq), np.int32)}


def background_runs(engine: SparseEngine, batch: dict, stop: threading.Event) -> threading.Thread:
    def loop() -> None:
        while not stop.is_set():
            engine.run(batch)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


def fork_during_run(path: str, forks: str) -> dict:
    """A thread keeps running the engine while the main thread forks: every child, forked at whatever point the
    run had reached, computes correct results at once."""
    engine = SparseEngine.load(path, num_threads=2)
    vocab = engine.config["vocab_size"]
    busy, probe = inputs(16, 64, vocab), inputs(2, 9, vocab, seed=1)
    expected = engine.run(probe)["last_hidden_state"]
    stop = threading.Event()
    background_runs(engine, busy, stop)
    outcomes = []
    warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads: the point of the test
    for i in range(int(forks)):
        time.sleep(0.003 * (i % 7))
        pid = os.fork()
        if pid == 0:
            signal.alarm(20)  # a hang kills the child, the parent sees it
            out = engine.run(probe)["last_hidden_state"]
            os._exit(0 if np.array_equal(out, expected) else 3)
        _, status = os.waitpid(pid, 0)
        outcomes.append(os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status))
    stop.set()
    return {"outcomes": outcomes}


def exit_while_running(path: str) -> dict:
    """Daemon threads are inside run() when the interpreter exits: the exit is clean and buffered output is kept
    (the parent reads the marker below and the exit status)."""
    engine = SparseEngine.load(path, num_threads=2)
    stop = threading.Event()
    for seed in range(3):
        background_runs(engine, inputs(8, 64, engine.config["vocab_size"], seed), stop)
    time.sleep(0.2)
    sys.stdout.write("still buffered at exit\n")
    return {"exited": True}


def inputs_written_during_run(path: str, rounds: str) -> dict:
    """Another thread writes out-of-range ids into the (in-place) int32 input while run() computes: each call
    either answers or refuses with ValueError, never reads out of bounds."""
    engine = SparseEngine.load(path, num_threads=2)
    batch = inputs(64, 128, engine.config["vocab_size"])  # embedding 8192 tokens: a long window
    ids = batch["input_ids"]
    stop = threading.Event()

    def scribble() -> None:
        while not stop.is_set():  # mostly valid, for an instant far out of the embedding table
            ids.fill(2**30)
            ids.fill(1)
            time.sleep(0.00005)

    writer = threading.Thread(target=scribble, daemon=True)
    writer.start()
    mask, types = batch["attention_mask"], np.zeros_like(ids)
    answered = refused = 0
    for i in range(int(rounds)):
        try:
            # Half the calls straight to the encoder: no Python check before its own, the narrowest window.
            engine.run(batch) if i % 2 else engine._encoder.run(ids, mask, types)
            answered += 1
        except ValueError:
            refused += 1
    stop.set()
    writer.join()
    return {"answered": answered, "refused": refused}


def profile_during_runs(path: str, rounds: str) -> dict:
    """profile() while other threads run the engine: every profile names only real ops."""
    engine = SparseEngine.load(path, num_threads=2)
    stop = threading.Event()
    for seed in range(2):
        background_runs(engine, inputs(4, 64, engine.config["vocab_size"], seed), stop)
    names = set()
    for _ in range(int(rounds)):
        names |= set(engine.profile(inputs(2, 17, engine.config["vocab_size"]), runs=2))
    stop.set()
    return {"ops": sorted(names)}


def interrupt_long_run(path: str, batch: str, seq: str) -> dict:
    """SIGINT during a long run() raises KeyboardInterrupt from the call, and the engine is usable after."""
    engine = SparseEngine.load(path, num_threads=2)
    vocab = engine.config["vocab_size"]
    long_call, probe = inputs(int(batch), int(seq), vocab), inputs(2, 9, vocab, seed=1)
    expected = engine.run(probe)["last_hidden_state"]
    sent = []

    def interrupt() -> None:
        time.sleep(0.5)
        sent.append(time.perf_counter())
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    start = time.perf_counter()
    try:
        engine.run(long_call)
        outcome = "completed"
    except KeyboardInterrupt:
        outcome = "interrupted"
    raised = time.perf_counter()
    same = bool(np.array_equal(engine.run(probe)["last_hidden_state"], expected))
    return {"outcome": outcome, "seconds_after_signal": raised - sent[0] if sent else None,
            "seconds_in_call": raised - start, "usable_after": same}


SCENARIOS = {f.__name__: f for f in (fork_during_run, exit_while_running, inputs_written_during_run,
                                     profile_during_runs, interrupt_long_run)}

if __name__ == "__main__":
    scenario, *args = sys.argv[1:]
    print(json.dumps(SCENARIOS[scenario](*args)))
