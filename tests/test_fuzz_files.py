"""Hostile model files: thousands of mutants of a valid file (truncations, bit flips, grown and shrunk headers,
header bytes behind a stale or a recomputed header CRC, out-of-range indices and row pointers
with valid checksums), each loaded in a subprocess run (a crash fails
the test); the valid files are one with fp32 and one with fp16 embedding tables. SPARSEBERT_FUZZ_CASES sets the
count per file: 1,000 by default (CI), 10,000 or more for a slow run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import sparsebert

from conftest import run_worker

WORKER = Path(__file__).with_name("fuzz_files_worker.py")


@pytest.fixture(scope="module")
def fp16_tables(small_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "fp16.sbert"
    sparsebert.export(small_model.model, path, verbose=False, compact=False, embeddings="fp16")
    return path


@pytest.mark.slow
@pytest.mark.parametrize("tables", ["fp32", "fp16"])
def test_mutated_files_load_correctly_or_raise(tables, small_model, request):
    cases = int(os.environ.get("SPARSEBERT_FUZZ_CASES", "1000"))
    path = small_model.path if tables == "fp32" else request.getfixturevalue("fp16_tables")
    summary = run_worker(WORKER, path, cases, 1234)
    assert summary["cases"] == cases
    assert not summary["unexpected"], summary["unexpected"]
    counts = summary["counts"]
    # Every kind of mutation was tried, and the structural ones were refused.
    assert set(counts) == {"truncate", "bitflip", "header_length", "header_byte", "header_byte_crc", "index", "pointer",
                           "append"}
    for kind in ("truncate", "bitflip", "header_length", "header_byte", "append"):
        assert set(counts[kind]) == {"refused"}, (kind, counts[kind])
