"""What a server process meets sooner or later, each reproduced in a process of its own (tests/hazard_worker.py):
fork while another thread runs the engine, interpreter exit with daemon threads inside run(), inputs written
during a run, profile() beside running threads, Ctrl-C during a long run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import sparsebert
from sparsebert import _core

from conftest import apply_plan_, make_model, run_worker

WORKER = Path(__file__).with_name("hazard_worker.py")
SOAK = Path(__file__).with_name("soak_worker.py")
OPS = {"embeddings", "qkv", "attention", "attention_output", "layer_norm", "ffn", "ffn_tiled", "heads_and_output"}


# int8 takes the same paths through the engine's locks and chunks; it joins in the full suite only.
@pytest.fixture(scope="module", params=["fp32", pytest.param("int8", marks=pytest.mark.slow)])
def model_file(request, tmp_path_factory):
    model = make_model("base", seed=4, num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                       intermediate_size=256, max_position_embeddings=128)
    apply_plan_(model, "block4")
    path = tmp_path_factory.mktemp("hazards") / f"{request.param}.sbert"
    sparsebert.export(model, path, verbose=False, quantize="int8" if request.param == "int8" else None)
    return path


# GCC 12's AddressSanitizer takes its allocator's own locks without guarding fork(): a child forked while another
# thread allocates can deadlock inside ASan's malloc (seen with gdb), which glibc's malloc never does.
@pytest.mark.skipif(_core.SANITIZED, reason="ASan's allocator does not survive fork() beside allocating threads")
def test_fork_at_any_moment_of_a_run(model_file):
    outcomes = run_worker(WORKER, "fork_during_run", model_file, 30, timeout=600)["outcomes"]
    assert outcomes == [0] * 30, outcomes  # 3: wrong result, -14: hung (SIGALRM), other: crashed


def test_interpreter_exit_with_daemon_threads_inside_run(model_file):
    for attempt in range(5):  # the abort it replaces happened about every other exit
        result = subprocess.run([sys.executable, str(WORKER), "exit_while_running", str(model_file)],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, (attempt, result.returncode, result.stderr[-2000:])
        assert "still buffered at exit" in result.stdout, (attempt, result.stdout)


def test_inputs_written_during_run_never_read_out_of_bounds(model_file):
    summary = run_worker(WORKER, "inputs_written_during_run", model_file, 100, timeout=600)
    assert summary["answered"] + summary["refused"] == 100


def test_profile_beside_running_threads(model_file):
    ops = set(run_worker(WORKER, "profile_during_runs", model_file, 40, timeout=600)["ops"])
    assert ops and ops <= OPS, ops


@pytest.mark.skipif(_core.SANITIZED, reason="the sanitizer build's speed says nothing here")
def test_ctrl_c_interrupts_a_long_run(tmp_path):
    model = make_model("base", seed=6, num_hidden_layers=4, hidden_size=256, num_attention_heads=4,
                       intermediate_size=1024, max_position_embeddings=256)
    path = tmp_path / "dense.sbert"
    sparsebert.export(model, path, verbose=False, layout="dense")
    # 512 x 256 tokens of a dense model take tens of seconds here; the signal comes after half a second.
    result = run_worker(WORKER, "interrupt_long_run", path, 512, 256, timeout=600)
    assert result["outcome"] == "interrupted", json.dumps(result)
    # Liveness, not speed: the engine polls between layers, well under a second apart here.
    assert result["seconds_after_signal"] < 5, json.dumps(result)
    assert result["usable_after"], json.dumps(result)


@pytest.mark.slow
@pytest.mark.skipif(_core.SANITIZED, reason="RSS is the sanitizer's under ASan")
def test_soak(model_file, tmp_path):
    other = make_model("token_classification", seed=9, num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                       intermediate_size=256, max_position_embeddings=128)
    apply_plan_(other, "unstructured")
    other_path = tmp_path / "token.sbert"
    sparsebert.export(other, other_path, verbose=False)
    seconds = float(os.environ.get("SPARSEBERT_SOAK_SECONDS", "60"))
    summary = run_worker(SOAK, seconds, model_file, other_path, timeout=seconds * 4 + 300)
    assert summary["mismatches"] == [] and all(n > 0 for n in summary["calls"]), summary
    assert summary["child"] == 0 and summary["interrupted"] is True, summary
    assert summary["rss_growth_bytes"] < 32 * 2**20 and not any(summary["alive"]), summary
