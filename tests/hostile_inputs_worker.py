"""Feeds SparseEngine.run hostile inputs: every dtype, ranks 0-3, empty, one-long and huge (broadcast, so no
memory) shapes, ids outside the vocabulary, masks that are not 0/1, Fortran order, strided, read-only and
misaligned arrays, missing and unknown names. Each call must return correct outputs or raise TypeError /
ValueError. Run as a subprocess by test_hostile_inputs.py, so a crash fails the test. Prints a JSON summary.

    python tests/hostile_inputs_worker.py FILE CASES SEED
"""

from __future__ import annotations

import json
import random
import sys

import numpy as np

from sparsebert import SparseEngine

DTYPES = [np.int64, np.int32, np.int16, np.int8, np.uint8, np.uint64, np.uint32, np.float32, np.float64, np.bool_,
          np.complex64, object, "U3"]


def base_ids(rng: random.Random, vocab: int, shape: tuple[int, ...]) -> np.ndarray:
    values = [rng.choice([0, 1, vocab - 1, vocab, -1, 2**31, -2**31, 2**40, rng.randrange(vocab)])
              for _ in range(int(np.prod(shape)))] if int(np.prod(shape)) < 10_000 else [1]
    if int(np.prod(shape)) >= 10_000:
        return np.broadcast_to(np.int64(1), shape)  # huge: a view, no memory
    good = rng.random() < 0.5
    array = np.array([rng.randrange(vocab) if good else v for v in values], dtype=object).reshape(shape)
    return array


def as_layout(rng: random.Random, array: np.ndarray) -> np.ndarray:
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


def convert(rng: random.Random, array: np.ndarray) -> np.ndarray:
    dtype = rng.choice(DTYPES)
    try:
        if isinstance(array, np.ndarray) and not array.flags.writeable and array.size >= 10_000:
            return array.astype(dtype, copy=False) if dtype != object else array
        return np.asarray(array).astype(dtype)
    except (OverflowError, ValueError, TypeError):
        return np.asarray(array, dtype=object)


def main() -> None:
    path, cases, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    engine = SparseEngine.load(path, num_threads=2)
    vocab = engine.config["vocab_size"]
    rng = random.Random(seed)
    outcomes = {"ran": 0, "refused": 0}
    unexpected = []
    for case in range(cases):
        rank = rng.choice([2, 2, 2, 0, 1, 3])
        shape = tuple(rng.choice([0, 1, 2, 5, 17]) for _ in range(rank))
        if rank and rng.random() < 0.1:  # huge (a broadcast view): as sequence length, past any position table
            shape = shape[:-1] + (10**6,)
        inputs: dict = {}
        try:
            inputs["input_ids"] = as_layout(rng, convert(rng, base_ids(rng, vocab, shape)))
            if rng.random() < 0.6:
                mask = np.array([rng.choice([0, 1, 1, 1, 2, -1]) for _ in range(int(np.prod(shape)))]
                                if int(np.prod(shape)) < 10_000 else [1]).reshape(
                    shape if int(np.prod(shape)) < 10_000 else (1,))
                inputs["attention_mask"] = as_layout(rng, convert(rng, np.broadcast_to(mask, shape)))
            if rng.random() < 0.3:
                inputs["token_type_ids"] = as_layout(rng, convert(rng, np.zeros(shape, dtype=np.int64)))
            if rng.random() < 0.05:
                inputs[rng.choice(["position_ids", "inputs_ids", ""])] = inputs["input_ids"]
        except (MemoryError, ValueError):
            continue
        names = ("input_ids", "attention_mask", "token_type_ids")
        prefix = list(inputs) == list(names[:len(inputs)])  # a list means these names, in this order
        call = list(inputs.values()) if prefix and rng.random() < 0.2 else inputs
        try:
            out = engine.run(call)
        except (TypeError, ValueError):
            outcomes["refused"] += 1
            continue
        except Exception as exc:  # noqa: BLE001 (any other exception is a finding)
            unexpected.append(f"case {case}: {type(exc).__name__}: {exc}"[:300])
            continue
        outcomes["ran"] += 1
        ids = np.asarray(inputs["input_ids"])
        hidden = out["last_hidden_state"]
        if hidden.shape[:2] != ids.shape or not np.isfinite(hidden).all():
            unexpected.append(f"case {case}: ran but returned shape {hidden.shape} for ids {ids.shape}, or NaN")
        else:  # a correct answer: the same as from plain int64 arrays
            plain = {k: np.ascontiguousarray(np.asarray(v), dtype=np.int64) for k, v in inputs.items()}
            again = engine.run(plain)
            if not all(np.array_equal(again[k], out[k]) for k in out):
                unexpected.append(f"case {case}: result depends on the input's dtype or layout")
    print(json.dumps({"cases": cases, "outcomes": outcomes, "unexpected": unexpected[:20]}))


if __name__ == "__main__":
    main()
