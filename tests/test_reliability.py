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

from sparsebert import _native  # noqa: E402

from conftest import assert_close, assert_close_unpadded, apply_plan_, make_model, random_inputs  # noqa: E402

# The AddressSanitizer build's shadow memory and allocator quarantine make RSS say nothing about the engine.
not_under_asan = pytest.mark.skipif(_native.core().SANITIZED, reason="RSS is the sanitizer's under ASan")


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


@not_under_asan
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


@pytest.mark.slow
@not_under_asan
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


# ------------------------------------------------------------------------------------------------------------
# Determinism
# ------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mixed_packed(tmp_path_factory):
    # Block4, unstructured and dense layers in one model, so every kernel family is in the run.
    model = make_model("sequence_classification", seed=31, num_hidden_layers=3)
    apply_plan_(model, "mixed")
    path = tmp_path_factory.mktemp("determinism") / "m.sbert"
    sparsebert.export(model, path, verbose=False, compact=False)
    return path


def test_outputs_are_bitwise_repeatable_per_thread_count_and_agree_across_counts(mixed_packed):
    inputs = random_inputs(97, [37, 5, 64, 1], seed=8)
    by_threads = {}
    for num_threads in (1, 2, 3, 4, 8):
        engine = SparseEngine.load(mixed_packed, num_threads=num_threads)
        first = engine.run(inputs)
        for repeat in range(4):
            if repeat == 2:
                engine.run(random_inputs(97, [80, 3], seed=repeat))  # other shapes in between leave nothing behind
            again = engine.run(inputs)
            for key in first:
                assert np.array_equal(again[key], first[key]), f"{num_threads} threads, run {repeat}: {key} differs"
        by_threads[num_threads] = first
    # Across thread counts only the parity tolerance is promised (a tile's thread may change its summation order).
    for num_threads, out in by_threads.items():
        for key, value in out.items():
            what = f"{num_threads} vs 1 threads/{key}"
            if key == "last_hidden_state":
                assert_close_unpadded(value, by_threads[1][key], inputs["attention_mask"], what=what)
            else:
                assert_close(value, by_threads[1][key], what=what)


# ------------------------------------------------------------------------------------------------------------
# Failed loads leave nothing behind
# ------------------------------------------------------------------------------------------------------------


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _mapped(path) -> bool:
    with open("/proc/self/maps") as f:
        return str(path) in f.read()


def _corrupt_variants(good: bytes) -> dict[str, bytes]:
    last_tensor_byte = len(good) - 1
    flipped = bytearray(good)
    flipped[last_tensor_byte] ^= 0xFF
    return {"truncated": good[: len(good) // 2], "flipped data byte": bytes(flipped), "trailing byte": good + b"\0"}


@pytest.mark.slow
def test_failed_loads_leave_no_mapping_descriptor_or_thread(tmp_path, packed):
    import gc

    good = packed.read_bytes()
    for name, data in _corrupt_variants(good).items():
        path = tmp_path / f"{name.replace(' ', '_')}.sbert"
        path.write_bytes(data)
        SparseEngine.load(packed, num_threads=4).run(random_inputs(97, [3]))  # warm: lazily made things exist
        gc.collect()
        fds, threads = _open_fds(), _threads()
        for _ in range(50):
            with pytest.raises(sparsebert.ModelFormatError):
                SparseEngine.load(path, num_threads=4)
        gc.collect()
        assert _open_fds() == fds, f"{name}: file descriptors leaked by failed loads"
        assert _threads() == threads, f"{name}: worker threads left running by failed loads"
        assert not _mapped(path), f"{name}: the refused file is still mapped"
        path.unlink()  # and it can be replaced or removed at once


def test_a_half_built_engine_cannot_be_made_or_used(packed):
    # The only way to an engine is load(), which returns a complete one or raises; direct construction is refused
    # with a message that says what to do.
    with pytest.raises(TypeError, match="SparseEngine.load"):
        SparseEngine(None, None)
    engine = SparseEngine.load(packed, num_threads=1)
    with pytest.raises(TypeError, match="SparseEngine.load"):
        SparseEngine(engine._encoder, None)
