"""Mutates a valid packed file many ways (cases generated, and a failing one shrunk, by hypothesis through
hypothesis_random.py) and loads each mutant: it must load and run, or raise a sparsebert /
ValueError / TypeError exception. Run as a subprocess by test_fuzz_files.py, so that a crash fails the test
instead of killing the test runner. Prints one JSON summary line.

    python tests/fuzz_files_worker.py FILE CASES SEED
"""

from __future__ import annotations

import json
import os
import struct
import sys
import tempfile
import zlib

import numpy as np

from sparsebert import SparseEngine
from sparsebert.errors import SparseBertError
from sparsebert.format import read_model

from hypothesis_random import DrawnRandom, run_cases

PREAMBLE = struct.Struct("<8sIIQ")
HEADER_AT = 32  # format version 2: the preamble, then header_crc32 and a reserved word
# Every byte of a file is covered by a check (magic, versions, header CRC, zero padding, tensor CRCs, file
# length), so these mutants must all be refused; the others may make a valid file of another model.
MUST_REFUSE = ("truncate", "bitflip", "header_length", "header_byte", "append")


def tensor_spans(data: bytes) -> list[tuple[str, int, int]]:
    """(name, absolute offset, nbytes) of every tensor of the original file."""
    _, fv, _, n = PREAMBLE.unpack_from(data)
    assert fv == 2, f"the fuzzer knows format version 2, the file has {fv}"
    header = json.loads(data[HEADER_AT:HEADER_AT + n])
    start = -(-(HEADER_AT + n) // 64) * 64
    return [(name, start + e["offset"], e["nbytes"]) for name, e in header["tensors"].items()]


def fix_header_crc(out: bytearray) -> bytearray:
    n = PREAMBLE.unpack_from(out)[3]
    crc = zlib.crc32(bytes(out[:PREAMBLE.size]) + bytes(out[HEADER_AT:HEADER_AT + n])) & 0xFFFFFFFF
    struct.pack_into("<I", out, PREAMBLE.size, crc)
    return out


def mutate(data: bytes, rng: DrawnRandom, spans: list[tuple[str, int, int]]) -> tuple[str, bytes]:
    out = bytearray(data)
    kind = rng.choice(["truncate", "bitflip", "header_length", "header_byte", "header_byte_crc", "index", "pointer",
                       "append"])
    if kind == "truncate":
        return kind, bytes(out[:rng.randrange(len(out))])
    if kind == "bitflip":
        for i in rng.sample(range(len(out)), rng.randint(1, 8)):  # distinct bytes, so no flip undoes another
            out[i] ^= 1 << rng.randrange(8)
    elif kind == "header_length":  # a grown or shrunk header length field
        magic, fv, lr, n = PREAMBLE.unpack_from(out)
        n = max(0, n + rng.choice([-1, 1]) * rng.randint(1, 4096)) if rng.random() < 0.9 else rng.getrandbits(63)
        PREAMBLE.pack_into(out, 0, magic, fv, lr, n)
    elif kind in ("header_byte", "header_byte_crc"):
        # header_byte_crc recomputes the header CRC, so the JSON parser and the header checks must refuse it.
        _, _, _, n = PREAMBLE.unpack_from(out)
        i = HEADER_AT + rng.randrange(n)
        out[i] = rng.choice([b for b in b'{}[]":,0123456789-e.tfn \x00\xff' if b != out[i]])
        if kind == "header_byte_crc":
            out = fix_header_crc(out)
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
    """Recompute one tensor's CRC in the header, then the header's own CRC."""
    n = PREAMBLE.unpack_from(out)[3]
    header = json.loads(out[HEADER_AT:HEADER_AT + n])
    header["tensors"][name]["crc32"] = zlib.crc32(bytes(out[offset:offset + nbytes])) & 0xFFFFFFFF
    text = json.dumps(header, separators=(",", ":")).encode()
    if len(text) > n:
        return out
    out[HEADER_AT:HEADER_AT + n] = text + b" " * (n - len(text))
    return fix_header_crc(out)


class Finding(Exception):
    """A mutant that crashed nothing but broke a rule; hypothesis shrinks the case that raised it."""


def main() -> None:
    path, cases, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    data = open(path, "rb").read()
    spans = tensor_spans(data)
    engine = SparseEngine.load(path, num_threads=1)
    ids = np.array([[5, 17, 3, 8, 2, 11]], dtype=np.int64)
    reference = engine.run({"input_ids": ids})
    counts: dict[str, dict[str, int]] = {}
    ran = [0]  # completed cases
    unexpected = []
    with tempfile.TemporaryDirectory() as tmp:
        target = os.path.join(tmp, "mutant.sbert")

        def one_case(rng: DrawnRandom) -> None:
            kind, mutant = mutate(data, rng, spans)
            with open(target, "wb") as f:
                f.write(mutant)
            outcome = "refused"
            try:
                read_model(target)
                out = SparseEngine.load(target, num_threads=1).run({"input_ids": ids})
                same = all(np.array_equal(out[k], reference[k]) for k in reference)
                outcome = "loaded" if same else "loaded, different"
                if kind in MUST_REFUSE:
                    raise Finding(f"{kind}: loaded a corrupt file")
                # Rewritten indices, pointers or header bytes behind recomputed CRCs can make a valid file of
                # another model (say another layer_norm_eps); nothing else may change what the model computes.
                if not same and kind not in ("index", "pointer", "header_byte_crc"):
                    raise Finding(f"{kind}: loaded and computed something else")
                if not all(np.isfinite(v).all() or not np.isfinite(reference[k]).all() for k, v in out.items()):
                    raise Finding(f"{kind}: non-finite outputs")
            except (SparseBertError, ValueError, TypeError):
                pass
            except Finding:
                raise
            except Exception as exc:  # noqa: BLE001 (the point: any other exception is a finding)
                raise Finding(f"{kind}: {type(exc).__name__}: {exc}"[:300]) from None
            counts.setdefault(kind, {}).setdefault(outcome, 0)
            counts[kind][outcome] += 1
            ran[0] += 1  # cases hypothesis abandoned midway (too much data drawn) are not counted

        try:
            run_cases(cases, seed, one_case)
        except Finding as exc:  # already shrunk by hypothesis to a minimal mutation
            unexpected.append(str(exc))
    print(json.dumps({"cases": ran[0], "counts": counts, "unexpected": unexpected}))


if __name__ == "__main__":
    main()
