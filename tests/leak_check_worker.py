"""Exercises the extension the ways a service would (loads, failed loads, runs of many shapes and thread
counts, refused inputs, the kernel API), then exits so LeakSanitizer can report what was never freed.
Run by test_sanitizers.py under the AddressSanitizer build; it also leaks one block on purpose (through ctypes,
outside sparsebert) so the test can tell a silent LeakSanitizer from a clean run.

    python tests/leak_check_worker.py MODEL_FILE CONTROL_BYTES
"""

from __future__ import annotations

import ctypes
import os
import sys
import tempfile

import numpy as np

from sparsebert import SparseEngine, kernels
from sparsebert.errors import SparseBertError


def main() -> None:
    path, control_bytes = sys.argv[1], int(sys.argv[2])
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        broken = os.path.join(tmp, "broken.sbert")
        with open(path, "rb") as f, open(broken, "wb") as g:
            g.write(f.read()[:-7])
        for round_ in range(6):
            engine = SparseEngine.load(path, num_threads=1 + round_ % 3)
            for batch, seq in ((1, 1), (3, 17), (2, 64), (1, 80)):
                engine.run({"input_ids": rng.integers(0, 97, size=(batch, seq))}, output_hidden_states=seq % 2 == 1)
            engine.profile({"input_ids": rng.integers(0, 97, size=(2, 9))}, runs=2)
            for bad in ({"input_ids": np.full((1, 4), 97)}, {"input_ids": np.zeros((1, 4), np.float32)}):
                try:
                    engine.run(bad)
                except (ValueError, TypeError):
                    pass
            try:  # straight to C++, which throws (and must free what it built) on out-of-range ids
                ids = np.full((1, 4), 10**6, np.int32)
                engine._encoder.run(ids, np.ones_like(ids), np.zeros_like(ids))
            except ValueError:
                pass
            try:
                SparseEngine.load(broken)
            except SparseBertError:
                pass
            for layout in ("dense", "unstructured", "block4", "block4_int8"):
                weight = rng.standard_normal((24, 36)).astype(np.float32)
                weight[rng.random(weight.shape) < 0.8] = 0.0
                linear = kernels.pack(weight, rng.standard_normal(24).astype(np.float32), layout=layout)
                linear.matmul(rng.standard_normal((36, 5)).astype(np.float32), activation="gelu", num_threads=2)
                linear.benchmark(tokens=8, runs=2)
            del engine, linear
    # The control: a block nobody frees, allocated outside sparsebert.
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    assert libc.malloc(control_bytes)
    print("done")


if __name__ == "__main__":
    main()
