"""Hostile inputs to SparseEngine.run (tests/hostile_inputs_worker.py), in a subprocess so a crash fails the
test: every call returns the outputs plain int64 inputs give, or raises TypeError / ValueError."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from sparsebert import SparseEngine

from conftest import run_worker

WORKER = Path(__file__).with_name("hostile_inputs_worker.py")


@pytest.mark.slow
def test_hostile_inputs_are_refused_or_answered_correctly(small_model):
    cases = int(os.environ.get("SPARSEBERT_FUZZ_CASES", "1000"))
    summary = run_worker(WORKER, small_model.path, cases, 3)
    assert summary["cases"] == cases
    assert not summary["unexpected"], summary["unexpected"]
    assert summary["outcomes"]["ran"] > 0 and summary["outcomes"]["refused"] > 0


def test_too_many_tokens_refused_before_any_copy(small_model):
    engine = SparseEngine.load(small_model.path, num_threads=1)
    huge = np.broadcast_to(np.int64(1), (2**20, 2**10))  # a view: 2^30 tokens, no memory behind it
    with pytest.raises(ValueError, match="tokens"):
        engine.run({"input_ids": huge})
