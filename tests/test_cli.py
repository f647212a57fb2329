"""The command line: `python -m sparsebert.cli export|info` and the `sparsebert` console script."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sparsebert import SparseEngine

from conftest import (
    ENCODER_LINEAR_SUFFIXES,
    apply_plan_,
    assert_close_unpadded,
    make_model,
    random_inputs,
    save_checkpoint,
    torch_forward,
)


def run_cli(*args, script=None, timeout=120):
    cmd = [script] if script else [sys.executable, "-m", "sparsebert.cli"]
    return subprocess.run(
        [*cmd, *map(str, args)], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def assert_one_line_error(proc, *fragments):
    assert proc.returncode != 0, f"exit code 0 on error; stdout={proc.stdout!r}"
    err = proc.stderr.strip()
    assert "Traceback" not in err, err
    assert len(err.splitlines()) == 1, f"expected a one-line message, got:\n{err}"
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in {err!r}"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model = make_model("sequence_classification", seed=31, num_hidden_layers=3)
    expected = apply_plan_(model, "mixed")
    directory = save_checkpoint(model, tmp_path_factory.mktemp("cli") / "ckpt")
    return model, expected, directory


def table_layouts(text: str) -> dict:
    """{layer name: layout} parsed from the per-layer table lines of CLI output."""
    found = {}
    for line in text.splitlines():
        parts = line.split()
        if parts and (parts[0].startswith("layers.") or parts[0] in ("pooler", "classifier", "qa_outputs")):
            layouts = [p for p in parts if p in ("dense", "unstructured", "block4")]
            assert len(layouts) == 1, line
            found[parts[0]] = layouts[0]
    return found


def expected_table(expected: dict) -> dict:
    table = {f"layers.{i}.{s}": layout for i, layout in expected.items() for s in ENCODER_LINEAR_SUFFIXES}
    table.update(pooler="dense", classifier="dense")
    return table


def test_export_and_info(checkpoint, tmp_path):
    model, expected, directory = checkpoint
    out = tmp_path / "model.sbert"
    proc = run_cli("export", directory, out)
    assert proc.returncode == 0, proc.stderr
    assert table_layouts(proc.stdout) == expected_table(expected), proc.stdout
    assert out.is_file()

    info = run_cli("info", out)
    assert info.returncode == 0, info.stderr
    assert table_layouts(info.stdout) == expected_table(expected), info.stdout
    assert "format_version 2" in info.stdout.replace("=", " ").replace(":", " ")
    assert "sequence_classification" in info.stdout

    # The exported file works.
    inp = random_inputs(model.config.vocab_size, [9, 3], seed=1)
    ref = torch_forward(model, inp)
    res = SparseEngine.load(out).run(inp)
    assert_close_unpadded(res["last_hidden_state"], ref["last_hidden_state"], inp["attention_mask"])
    np.testing.assert_allclose(res["logits"], ref["logits"], rtol=0, atol=1e-4)


def test_export_options(checkpoint, tmp_path):
    _, expected, directory = checkpoint
    out = tmp_path / "dense.sbert"
    proc = run_cli("export", directory, out, "--layout", "dense")
    assert proc.returncode == 0, proc.stderr
    assert set(table_layouts(proc.stdout).values()) == {"dense"}
    proc = run_cli("export", directory, tmp_path / "d2.sbert", "--dense-below", "0.95")
    assert proc.returncode == 0, proc.stderr
    assert set(table_layouts(proc.stdout).values()) == {"dense"}


def test_console_script(checkpoint, tmp_path):
    script = Path(sys.executable).parent / ("sparsebert.exe" if os.name == "nt" else "sparsebert")
    assert script.is_file(), f"console script {script} is not installed"
    _, expected, directory = checkpoint
    out = tmp_path / "m.sbert"
    proc = run_cli("export", directory, out, script=str(script))
    assert proc.returncode == 0, proc.stderr
    info = run_cli("info", out, script=str(script))
    assert info.returncode == 0, info.stderr
    assert table_layouts(info.stdout) == expected_table(expected)


def test_info_on_bad_files(tmp_path, small_model):
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    assert_one_line_error(run_cli("info", text), "notes.txt")

    truncated = tmp_path / "truncated.sbert"
    truncated.write_bytes(small_model.path.read_bytes()[:1000])
    assert_one_line_error(run_cli("info", truncated), "truncated.sbert")

    data = bytearray(small_model.path.read_bytes())
    data[-3] ^= 0xFF
    flipped = tmp_path / "flipped.sbert"
    flipped.write_bytes(bytes(data))
    assert_one_line_error(run_cli("info", flipped), "flipped.sbert")

    assert_one_line_error(run_cli("info", tmp_path / "missing.sbert"), "missing.sbert")


@pytest.mark.slow
def test_export_errors(tmp_path, checkpoint):
    _, _, directory = checkpoint
    # Source does not exist.
    assert_one_line_error(run_cli("export", tmp_path / "nope", tmp_path / "o.sbert"), "nope")
    # Unsupported checkpoint.
    model = make_model("base", num_hidden_layers=1, hidden_act="silu")
    bad = save_checkpoint(model, tmp_path / "silu")
    assert_one_line_error(run_cli("export", bad, tmp_path / "o.sbert"), "silu")
    # Corrupt weights file.
    broken = save_checkpoint(make_model("base", num_hidden_layers=1), tmp_path / "broken")
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    assert_one_line_error(run_cli("export", broken, tmp_path / "o.sbert"), "model.safetensors")
    broken_bin = save_checkpoint(make_model("base", num_hidden_layers=1), tmp_path / "broken_bin", fmt="bin")
    weights = broken_bin / "pytorch_model.bin"
    weights.write_bytes(weights.read_bytes()[:100])
    assert_one_line_error(run_cli("export", broken_bin, tmp_path / "o.sbert"), "pytorch_model.bin")
    # Broken config.json.
    (broken / "config.json").write_text("{not json")
    assert_one_line_error(run_cli("export", broken, tmp_path / "o.sbert"), "config.json")
    # Output directory does not exist.
    assert_one_line_error(run_cli("export", directory, tmp_path / "no" / "o.sbert"))
    assert not (tmp_path / "o.sbert").exists()


def test_usage_errors():
    proc = run_cli()
    assert proc.returncode != 0
    proc = run_cli("frobnicate")
    assert proc.returncode != 0
    assert "frobnicate" in proc.stderr
