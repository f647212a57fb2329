"""Mutates a valid packed file many ways and loads each mutant: it must load and run, or raise a sparsebert /
ValueError / TypeError exception. Run as a subprocess by test_fuzz_files.py, so that a crash fails the test
instead of killing the test runner. Prints one JSON summary line.

    python tests/fuzz_files_worker.py FILE CASES SEED
"""

from __future__ import annotations

import json
import os
import random
import struct
import sys
import tempfile

import numpy as np

from sparsebert import SparseEngine
from sparsebert.errors import SparseBertError
from sparsebert.format import read_model

PREAMBLE = struct.Struct("<8sIIQ")


def tensor_spans(data: bytes) -> list[tuple[str, int, int]]:
    """(name, absolute offset, nbytes) of every tensor of the original file."""
    _, _, _, n = PREAMBLE.unpack_from(data)
    header = json.loads(data[PREAMBLE.size:PREAMBLE.size + n])
    start = -(-(PREAMBLE.size + n) // 64) * 64
    return [(name, start + e["offset"], e["nbytes"]) for name, e in header["tensors"].items()]


def mutate(data: bytes, rng: random.Random, spans: list[tuple[str, int, int]]) -> tuple[str, bytes]:
    out = bytearray(data)
    kind = rng.choice(["truncate", "bitflip", "header_length", "header_byte", "index", "pointer", "append"])
    if kind == "truncate":
        return kind, bytes(out[:rng.randrange(len(out))])
    if kind == "bitflip":
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(out))
            out[i] ^= 1 << rng.randrange(8)
    elif kind == "header_length":  # a grown or shrunk header length field
        magic, fv, lr, n = PREAMBLE.unpack_from(out)
        n = max(0, n + rng.choice([-1, 1]) * rng.randint(1, 4096)) if rng.random() < 0.9 else rng.getrandbits(63)
        PREAMBLE.pack_into(out, 0, magic, fv, lr, n)
    elif kind == "header_byte":
        _, _, _, n = PREAMBLE.unpack_from(out)
        i = PREAMBLE.size + rng.randrange(n)
        out[i] = rng.choice(b'{}[]":,0123456789-e.tfn \x00\xff')
    elif kind in ("index", "pointer"):
        # Out-of-range or non-monotone indices and row pointers, written with a valid CRC so that only the
        # structural checks stand between them and a kernel.
        suffixes = ("col_idx", "block_col") if kind == "index" else ("row_ptr", "block_ptr")
        chosen = [s for s in spans if s[0].endswith(suffixes) and s[2]]
        if not chosen:
            return kind, bytes(out)
        name, offset, nbytes = rng.choice(chosen)
        width = 2 if kind == "index" else 4
        i = offset + width * rng.randrange(nbytes // width)
        value = rng.choice([0xFFFF, 0x8000, rng.getrandbits(16)]) if width == 2 else rng.choice(
            [-1, 2**31 - 1, rng.getrandbits(31), 0])
        out[i:i + width] = struct.pack("<H" if width == 2 else "<i", value)
        out = fix_crc(out, name, offset, nbytes)
    else:  # append
        out += bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 200)))
    return kind, bytes(out)


def fix_crc(out: bytearray, name: str, offset: int, nbytes: int) -> bytearray:
    import zlib

    _, fv, lr, n = PREAMBLE.unpack_from(out)
    header = json.loads(out[PREAMBLE.size:PREAMBLE.size + n])
    header["tensors"][name]["crc32"] = zlib.crc32(bytes(out[offset:offset + nbytes])) & 0xFFFFFFFF
    text = json.dumps(header, separators=(",", ":")).encode()
    if len(text) > n:
        return out
    out[PREAMBLE.size:PREAMBLE.size + n] = text + b" " * (n - len(text))
    return out


def main() -> None:
    path, cases, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    data = open(path, "rb").read()
    spans = tensor_spans(data)
    engine = SparseEngine.load(path, num_threads=1)
    ids = np.array([[5, 17, 3, 8, 2, 11]], dtype=np.int64)
    reference = engine.run({"input_ids": ids})
    rng = random.Random(seed)
    counts: dict[str, dict[str, int]] = {}
    unexpected = []
    with tempfile.TemporaryDirectory() as tmp:
        target = os.path.join(tmp, "mutant.sbert")
        for case in range(cases):
            kind, mutant = mutate(data, rng, spans)
            with open(target, "wb") as f:
                f.write(mutant)
            outcome = "refused"
            try:
                read_model(target)
                out = SparseEngine.load(target, num_threads=1).run({"input_ids": ids})
                same = all(np.array_equal(out[k], reference[k]) for k in reference)
                outcome = "loaded" if same else "loaded, different"
                # Rewritten indices or pointers with a recomputed CRC can make a valid file of another matrix,
                # and the JSON header carries no checksum (a flipped digit of layer_norm_eps is still a valid
                # eps); any other mutant that loads must compute exactly what the original does.
                if not same and kind not in ("index", "pointer", "header_byte", "bitflip"):
                    unexpected.append(f"case {case} ({kind}): loaded and computed something else")
                if not all(np.isfinite(v).all() or not np.isfinite(reference[k]).all() for k, v in out.items()):
                    unexpected.append(f"case {case} ({kind}): non-finite outputs")
            except (SparseBertError, ValueError, TypeError):
                pass
            except Exception as exc:  # noqa: BLE001 (the point: any other exception is a finding)
                outcome = "other exception"
                unexpected.append(f"case {case} ({kind}): {type(exc).__name__}: {exc}"[:300])
            counts.setdefault(kind, {}).setdefault(outcome, 0)
            counts[kind][outcome] += 1
    print(json.dumps({"cases": cases, "counts": counts, "unexpected": unexpected[:20]}))


if __name__ == "__main__":
    main()
