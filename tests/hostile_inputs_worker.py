"""Feeds SparseEngine.run hostile inputs: every dtype, ranks 0-3, empty, one-long and huge (broadcast, so no
memory) shapes, ids outside the vocabulary, masks that are not 0/1, Fortran order, strided, read-only and
misaligned arrays, missing and unknown names. Each call must return correct outputs or raise TypeError /
ValueError. Cases are generated (and a failing one shrunk) by hypothesis through hypothesis_random.py. Run as a
subprocess by test_hostile_inputs.py, so a crash fails the test. Prints a JSON summary.

    python tests/hostile_inputs_worker.py FILE CASES SEED
"""

from __future__ import annotations

import json
import sys

import numpy as np

from sparsebert import SparseEngine

from hypothesis_random import DrawnRandom, run_cases

DTYPES = [np.int64, np.int32, np.int16, np.int8, np.uint8, np.uint64, np.uint32, np.float32, np.float64, np.bool_,
          np.complex64, object, "U3"]


def base_ids(rng: DrawnRandom, vocab: int, shape: tuple[int, ...]) -> np.ndarray:
    size = int(np.prod(shape))
    if size >= 10_000:
        return np.broadcast_to(np.int64(1), shape)  # huge: a view, no memory
    if rng.random() < 0.5:  # in range
        return np.random.default_rng(rng.getrandbits(32)).integers(0, vocab, size=shape).astype(object)
    # Edge values element by element (from a seed hypothesis draws: one draw, not one per element).
    edges = np.array([0, 1, vocab - 1, vocab, -1, 2**31, -2**31, 2**40, rng.randrange(vocab)], dtype=object)
    return np.random.default_rng(rng.getrandbits(32)).choice(edges, size=shape)


def as_layout(rng: DrawnRandom, array: np.ndarray) -> np.ndarray:
    choice = rng.choice(["plain", "fortran", "strided", "readonly", "misaligned"])
    if array.dtype == object or array.ndim == 0:
        return array
    if choice == "fortran":
        return np.asfortranarray(array)
    if choice == "strided" and array.ndim == 2:
        wide = np.repeat(array, 2, axis=1)
        return wide[:, ::2]
    if choice == "readonly":
        view = array.view()
        view.flags.writeable = False
        return view
    if choice == "misaligned" and array.dtype.itemsize > 1 and array.flags.c_contiguous:
        raw = np.zeros(array.nbytes + 1, dtype=np.uint8)
        view = np.frombuffer(raw.data, dtype=array.dtype, count=array.size, offset=1).reshape(array.shape)
        view[...] = array
        return view
    return array


def convert(rng: DrawnRandom, array: np.ndarray) -> np.ndarray:
    dtype = rng.choice(DTYPES)
    try:
        if isinstance(array, np.ndarray) and not array.flags.writeable and array.size >= 10_000:
            return array.astype(dtype, copy=False) if dtype is not object else array
        return np.asarray(array).astype(dtype)
    except (OverflowError, ValueError, TypeError):
        return np.asarray(array, dtype=object)


class Finding(Exception):
    """A call that crashed nothing but broke a rule; hypothesis shrinks the case that raised it."""


def main() -> None:
    path, cases, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    engine = SparseEngine.load(path, num_threads=2)
    vocab = engine.config["vocab_size"]
    outcomes = {"ran": 0, "refused": 0, "not built": 0}
    unexpected = []

    def one_case(rng: DrawnRandom) -> None:
        rank = rng.choice([2, 2, 2, 0, 1, 3])
        shape = tuple(rng.choice([0, 1, 2, 5, 17]) for _ in range(rank))
        if rank and rng.random() < 0.1:  # huge (a broadcast view): as sequence length, past any position table
            shape = shape[:-1] + (10**6,)
        inputs: dict = {}
        try:
            inputs["input_ids"] = as_layout(rng, convert(rng, base_ids(rng, vocab, shape)))
            if rng.random() < 0.6:
                mask = (np.random.default_rng(rng.getrandbits(32)).choice([0, 1, 1, 1, 2, -1], size=shape)
                        if int(np.prod(shape)) < 10_000 else np.broadcast_to(np.int64(1), shape))
                inputs["attention_mask"] = as_layout(rng, convert(rng, mask))
            if rng.random() < 0.3:
                inputs["token_type_ids"] = as_layout(rng, convert(rng, np.zeros(shape, dtype=np.int64)))
            if rng.random() < 0.05:
                inputs[rng.choice(["position_ids", "inputs_ids", ""])] = inputs["input_ids"]
        except (MemoryError, ValueError):
            outcomes["not built"] += 1
            return
        names = ("input_ids", "attention_mask", "token_type_ids")
        prefix = list(inputs) == list(names[:len(inputs)])  # a list means these names, in this order
        call = list(inputs.values()) if prefix and rng.random() < 0.2 else inputs
        try:
            out = engine.run(call)
        except (TypeError, ValueError):
            outcomes["refused"] += 1
            return
        except Exception as exc:  # noqa: BLE001 (any other exception is a finding)
            raise Finding(f"{type(exc).__name__}: {exc}"[:300]) from None
        outcomes["ran"] += 1
        ids = np.asarray(inputs["input_ids"])
        hidden = out["last_hidden_state"]
        if hidden.shape[:2] != ids.shape or not np.isfinite(hidden).all():
            raise Finding(f"ran but returned shape {hidden.shape} for ids {ids.shape}, or NaN")
        # A correct answer: the same as from plain int64 arrays.
        plain = {k: np.ascontiguousarray(np.asarray(v), dtype=np.int64) for k, v in inputs.items()}
        again = engine.run(plain)
        if not all(np.array_equal(again[k], out[k]) for k in out):
            raise Finding("result depends on the input's dtype or layout")

    try:
        run_cases(cases, seed, one_case)
    except Finding as exc:  # already shrunk by hypothesis to a minimal input
        unexpected.append(str(exc))
    print(json.dumps({"cases": sum(outcomes.values()), "outcomes": outcomes, "unexpected": unexpected}))


if __name__ == "__main__":
    main()
