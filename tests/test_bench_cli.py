"""`sparsebert bench`: the engine benchmark, --sweep and --kernels write valid JSON, PNG and Markdown, record
the command, and refuse bad requests with one-line errors before any slow work."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import sparsebert
from sparsebert import cli

from conftest import apply_plan_, make_model, save_checkpoint

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Fast settings: a tiny model, 3 runs, no pauses.
FAST = ["--runs", "3", "--warmup", "1", "--pause-ms", "0", "--threads", "1", "--quiet"]


def _strict_json(path) -> dict:
    def refuse(name):
        raise AssertionError(f"{path} holds {name}, which is not JSON")

    with open(path, encoding="utf-8") as f:
        return json.load(f, parse_constant=refuse)


def _png_size(path) -> tuple[int, int]:
    from pathlib import Path

    data = Path(path).read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    # IHDR is the first chunk: width and height, big-endian, at bytes 16..24.
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@pytest.mark.slow
def test_console_script_writes_json_png_and_markdown(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("matplotlib")
    out_json, out_png, out_md = tmp_path / "r.json", tmp_path / "r.png", tmp_path / "r.md"
    args = ["bench", "--random", "tiny", "--sparsity", "0.8", "--batch", "2", "--seq", "16", *FAST,
            "--json", str(out_json), "--plot", str(out_png), "--markdown", str(out_md)]
    proc = subprocess.run([sys.executable, "-m", "sparsebert.cli", *args], capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr

    result = _strict_json(out_json)
    assert result["kind"] == "engine"
    assert list(result["engines"]) == ["sparsebert", "onnxruntime", "pytorch"]
    assert result["agree"] is True
    assert (result["batch"], result["seq"], result["threads"], result["runs"]) == (2, 16, 1, 3)
    assert result["model"]["origin"] == {"kind": "random", "name": "tiny", "sparsity": 0.8, "block": 1,
                                         "seed": 0, "head": "none", "layout": "auto"}
    for e in result["engines"].values():
        assert len(e["times_ms"]) == 3
        for key in ("median_ms", "p10_ms", "throughput_seq_s", "dense_gflops", "real_gflops"):
            assert isinstance(e[key], float) and e[key] > 0, key
    env = result["environment"]
    assert env["command"].endswith("sparsebert/cli.py " + " ".join(args)) or env["command"] == \
        "sparsebert " + " ".join(args)
    assert env["isa"] in sparsebert.available_isas()
    assert env["versions"]["onnxruntime"] and env["versions"]["torch"]

    width, height = _png_size(out_png)
    assert width > 300 and height > 100
    md = out_md.read_text()
    assert "| engine" in md and "Command: `" in md

    # The terminal report: the table and the agreement line, nothing from progress messages.
    for fragment in ("median ms", "sparsebert / engine", "ONNX Runtime", "PyTorch", "-> OK"):
        assert fragment in proc.stdout, fragment


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    model = make_model("sequence_classification", seed=11, num_hidden_layers=3)
    apply_plan_(model, "mixed")
    root = tmp_path_factory.mktemp("bench_cli")
    directory = save_checkpoint(model, root / "ckpt")
    packed = root / "model.sbert"
    sparsebert.export(model, packed, verbose=False)
    return directory, packed


def test_bench_packed_file_and_checkpoint_directory(tiny_checkpoint, tmp_path, capsys):
    directory, packed = tiny_checkpoint
    for source, kind in ((packed, "file"), (directory, "checkpoint")):
        out = tmp_path / f"{kind}.json"
        argv = ["bench", str(source), "--seq", "12", *FAST, "--peers", "sparsebert,pytorch", "--json", str(out)]
        assert cli.main(argv) == 0
        result = _strict_json(out)
        assert result["model"]["origin"]["kind"] == kind
        assert result["model"]["config"]["head"] == "sequence_classification"
        assert result["model"]["layouts"] == {"block4": 4, "unstructured": 4, "dense": 6}
        assert result["agree"] and result["agreement"]["sparsebert vs pytorch"] < 1e-4
        assert result["environment"]["command"] == "sparsebert " + " ".join(argv)
    assert "-> OK" in capsys.readouterr().out


@pytest.mark.skipif(sparsebert.engine.bf16_attention_unavailable() is not None,
                    reason=f"bf16 attention: {sparsebert.engine.bf16_attention_unavailable()}")
@pytest.mark.parametrize("mode", ["interleaved", "isolated"])
def test_bench_with_bf16_attention_says_so(tiny_checkpoint, tmp_path, mode, monkeypatch):
    monkeypatch.delenv("SPARSEBERT_ATTENTION", raising=False)
    _, packed = tiny_checkpoint
    out = tmp_path / "r.json"
    argv = ["bench", str(packed), "--seq", "12", *FAST, "--peers", "sparsebert", "--mode", mode, "--attention", "bf16",
            "--json", str(out)]
    assert cli.main(argv) == 0
    engine = _strict_json(out)["engines"]["sparsebert"]
    assert engine["info"]["attention"] == "bf16" and "bf16 attention" in engine["label"], engine
    assert "SPARSEBERT_ATTENTION" not in os.environ  # set for the run only


def test_bench_sweep_writes_table_plot_and_json(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out_json, out_png, out_md = tmp_path / "s.json", tmp_path / "s.png", tmp_path / "s.md"
    argv = ["bench", "--sweep", "--random", "tiny", "--sparsities", "0,90", "--block", "4", "--seq", "8", *FAST,
            "--peers", "sparsebert,pytorch", "--json", str(out_json), "--plot", str(out_png),
            "--markdown", str(out_md)]
    assert cli.main(argv) == 0
    result = _strict_json(out_json)
    assert result["kind"] == "sweep" and result["block"] == 4
    assert [p["sparsity"] for p in result["points"]] == [0.0, 0.9]
    assert result["points"][1]["model"]["layouts"]["block4"] == 8
    printed = capsys.readouterr().out
    assert printed.strip() == out_md.read_text().strip()
    table = [line for line in printed.splitlines() if line.startswith("|")]
    assert len(table) == 4 and "| 90%" in table[3]
    _png_size(out_png)

    # --render rebuilds the same table (and a plot) from the JSON without measuring anything.
    again_md, again_png = tmp_path / "again.md", tmp_path / "again.png"
    assert cli.main(["bench", "--render", str(out_json), "--markdown", str(again_md), "--plot", str(again_png)]) == 0
    assert again_md.read_text() == out_md.read_text()
    _png_size(again_png)


def test_bench_kernels_json_and_table(tmp_path, capsys):
    out_json = tmp_path / "k.json"
    argv = ["bench", "--kernels", "--shapes", "24x20,8x36", "--tokens", "16", "--threads", "1,2", "--runs", "2",
            "--kernel-layouts", "dense,block4", "--quiet", "--json", str(out_json)]
    assert cli.main(argv) == 0
    result = _strict_json(out_json)
    assert [(r["n"], r["k"], r["threads"], r["layout"]) for r in result["rows"]] == [
        (n, k, t, lay) for n, k in ((24, 20), (8, 36)) for t in (1, 2) for lay in ("dense", "block4")]
    assert all(np.isfinite(r["peak_fraction"]) and r["peak_fraction"] > 0 for r in result["rows"])
    assert "| 24 × 20 |     16 | 90% 4-block |       2 |" in capsys.readouterr().out


@pytest.mark.parametrize("argv, fragment", [
    (["bench"], "give either MODEL"),
    (["bench", "x.sbert", "--random", "tiny"], "give either MODEL"),
    (["bench", "/no/such/model.sbert"], "no such model file"),
    (["bench", "--random", "tiny", "--seq", "4096", "--runs", "1"], "max_position_embeddings"),
    (["bench", "--sweep", "m.sbert"], "does not take MODEL"),
    (["bench", "--sweep", "--kernels"], "one at a time"),
    (["bench", "--random", "tiny", "--batch", "1,2"], "--batch takes one value"),
    (["bench", "--random", "tiny", "--json", "/no/such/dir/r.json"], "directory does not exist"),
    (["bench", "--render", __file__], "is not a sparsebert bench result"),
    (["bench", "--random", "tiny", "--isa", "scalar", "--attention", "bf16"], "bf16 attention is not available"),
    (["bench", "--random", "tiny", "--isa", "sse9", "--attention", "bf16"], "sse9"),
    (["bench", "--kernels", "--attention", "bf16"], "not --kernels or --render"),
])
def test_bench_errors_are_one_line(argv, fragment, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    # Progress lines ("[bench] ...") may come first; the error is one line, last.
    assert [line for line in err.splitlines() if not line.startswith("[bench]")] == [err.splitlines()[-1]]
    assert err.splitlines()[-1].startswith("sparsebert bench: error: ") and fragment in err, err


@pytest.mark.parametrize("argv", [
    ["bench", "--random", "tiny", "--peers", "sparsebert,tensorflow"],
    ["bench", "--random", "huge"],
    ["bench", "--sweep", "--sparsities", "0,100"],
    ["bench", "--random", "tiny", "--sparsity", "-0.1"],
    ["bench", "--kernels", "--shapes", "768by768"],
    ["bench", "--random", "tiny", "--attention", "fp16"],
])
def test_bench_bad_options_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err  # one line, pointing at the help (the usage summary is not repeated)
    assert len(err.splitlines()) == 1 and err.startswith("sparsebert bench: error: argument --") and "--help" in err


def test_bench_exits_1_when_outputs_disagree(monkeypatch, tmp_path):
    from sparsebert.bench import runners

    real = runners.pytorch_runner

    def wrong(*args, **kwargs):
        runner = real(*args, **kwargs)
        good = runner.hidden
        runner.hidden = lambda out: good(out) * 1.01
        return runner

    monkeypatch.setattr(runners, "pytorch_runner", wrong)
    out = tmp_path / "r.json"
    assert cli.main(["bench", "--random", "tiny", "--seq", "8", *FAST, "--peers", "sparsebert,pytorch",
                     "--json", str(out)]) == 1
    assert _strict_json(out)["agree"] is False
    assert not os.path.exists(str(out) + ".tmp")
