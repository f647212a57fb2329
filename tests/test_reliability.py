"""Engines under a service's conditions: many Python threads, fork, other thread pools in the process, long
runs, memory."""

from __future__ import annotations

import os
import threading
import time
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import sparsebert  # noqa: E402
from sparsebert import SparseEngine  # noqa: E402

from conftest import apply_plan_, make_model, random_inputs  # noqa: E402


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    model = make_model("sequence_classification", seed=21, num_hidden_layers=2)
    apply_plan_(model, "unstructured")
    path = tmp_path_factory.mktemp("reliability") / "m.sbert"
    sparsebert.export(model, path, verbose=False)
    return path


def test_eight_threads_on_one_engine_equal_serial_results(packed):
    engine = SparseEngine.load(packed, num_threads=2)
    inputs = [random_inputs(97, [1 + 7 * i, 3 + i], seed=i) for i in range(8)]
    expected = [engine.run(x) for x in inputs]
    failures: list[str] = []
    start = threading.Barrier(8)

    def worker(i: int) -> None:
        start.wait()
        for _ in range(25):
            out = engine.run(inputs[i])
            if any(not np.array_equal(out[k], expected[i][k]) for k in out):
                failures.append(f"thread {i}")
                return

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert not failures, failures


def test_gil_is_released_during_run():
    # A long run on the main thread; a Python thread must make progress meanwhile.
    model = make_model("base", seed=22, num_hidden_layers=4, hidden_size=256, num_attention_heads=4,
                       intermediate_size=1024, max_position_embeddings=512)
    path = os.path.join(os.environ.get("PYTEST_TMPDIR", "/tmp"), f"gil-{os.getpid()}.sbert")
    try:
        sparsebert.export(model, path, verbose=False)
        engine = SparseEngine.load(path, num_threads=1)
        inputs = random_inputs(97, [512] * 4, seed=1)
        engine.run(inputs)
        counter = [0]
        stop = threading.Event()

        def spin() -> None:
            while not stop.is_set():
                counter[0] += 1

        thread = threading.Thread(target=spin)
        thread.start()
        time.sleep(0.05)
        before = counter[0]
        t0 = time.perf_counter()
        engine.run(inputs)
        elapsed = time.perf_counter() - t0
        during = counter[0] - before
        stop.set()
        thread.join()
        # With the GIL held for the whole run the counter could move only at the switch interval's edges.
        assert elapsed > 0.02 and during > 1000, (elapsed, during)
    finally:
        if os.path.exists(path):
            os.remove(path)


def test_engine_works_in_a_forked_child(packed):
    # Documented: after fork the child's pool has no worker threads, so it runs every task on the calling
    # thread, and gives the same results.
    engine = SparseEngine.load(packed, num_threads=2)
    inputs = random_inputs(97, [13, 4], seed=3)
    expected = engine.run(inputs)["logits"]
    read, write = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads: what this test is about
        pid = os.fork()
    if pid == 0:  # the child: report and leave without running pytest's atexit machinery
        try:
            out = engine.run(inputs)["logits"]
            os.write(write, b"ok" if np.array_equal(out, expected) else b"differs")
        except BaseException as exc:  # noqa: BLE001 (anything must reach the parent)
            os.write(write, f"raised {exc!r}".encode()[:500])
        finally:
            os._exit(0)
    os.close(write)
    message = os.read(read, 1000)
    os.close(read)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert message == b"ok", message
    np.testing.assert_array_equal(engine.run(inputs)["logits"], expected)  # the parent's pool still works


def test_no_deadlock_next_to_torch_and_onnxruntime_pools(packed):
    ort = pytest.importorskip("onnxruntime")
    from sparsebert.bench.models import to_transformers
    from sparsebert.bench.onnx_export import export_onnx

    engine = SparseEngine.load(packed, num_threads=2)
    onnx_path = str(packed) + ".onnx"
    export_onnx(to_transformers(packed), engine.config, onnx_path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
    inputs = random_inputs(97, [20, 9], seed=4)
    expected = engine.run(inputs)["logits"]
    a = torch.randn(256, 256)
    errors: list[str] = []

    def ours() -> None:
        for _ in range(30):
            if not np.array_equal(engine.run(inputs)["logits"], expected):
                errors.append("sparsebert result changed")

    def theirs() -> None:
        for _ in range(30):
            session.run(None, inputs)
            torch.mm(a, a)

    threads = [threading.Thread(target=f) for f in (ours, theirs, ours, theirs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "deadlock"
    assert not errors


def test_resident_memory_is_flat_over_10000_runs(packed):
    engine = SparseEngine.load(packed, num_threads=2)
    inputs = random_inputs(97, [17, 5], seed=5)
    for _ in range(200):  # warm-up: scratch buffers reach their size
        engine.run(inputs)
    before = rss_bytes()
    for _ in range(10_000):
        engine.run(inputs)
    growth = rss_bytes() - before
    assert growth < 0.01 * before, f"RSS grew by {growth} bytes from {before}"


def test_loaded_model_costs_about_its_packed_size(tmp_path):
    model = make_model("base", seed=23, num_hidden_layers=6, hidden_size=384, num_attention_heads=6,
                       intermediate_size=1536, vocab_size=8000, max_position_embeddings=256)
    apply_plan_(model, "unstructured")
    path = tmp_path / "m.sbert"
    sparsebert.export(model, path, verbose=False)
    del model
    size = os.path.getsize(path)
    before = rss_bytes()
    engine = SparseEngine.load(path, num_threads=1)
    loaded = rss_bytes() - before
    # Packed arrays are re-laid out for the kernels (paired rows, padding) but not duplicated: well under 2x.
    assert loaded < 2.0 * size, (loaded, size)
    assert engine.run(random_inputs(8000, [8], seed=1))["last_hidden_state"].shape == (1, 8, 384)
