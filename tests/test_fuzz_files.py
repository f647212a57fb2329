"""Hostile model files: thousands of mutants of a valid file (truncations, bit flips, grown and shrunk headers,
header bytes behind a stale or a recomputed header CRC, out-of-range indices and row pointers
with valid checksums), each loaded in a subprocess run (a crash fails
the test). SPARSEBERT_FUZZ_CASES sets the count: 1,000 by default (CI), 10,000 or more for a slow run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import run_worker

WORKER = Path(__file__).with_name("fuzz_files_worker.py")


@pytest.mark.slow
def test_mutated_files_load_correctly_or_raise(small_model):
    cases = int(os.environ.get("SPARSEBERT_FUZZ_CASES", "1000"))
    summary = run_worker(WORKER, small_model.path, cases, 1234)
    assert summary["cases"] == cases
    assert not summary["unexpected"], summary["unexpected"]
    counts = summary["counts"]
    # Every kind of mutation was tried, and the structural ones were refused.
    assert set(counts) == {"truncate", "bitflip", "header_length", "header_byte", "header_byte_crc", "index", "pointer",
                           "append"}
    for kind in ("truncate", "bitflip", "header_length", "header_byte", "append"):
        assert set(counts[kind]) == {"refused"}, (kind, counts[kind])
