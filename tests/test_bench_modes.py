"""The benchmark's timing modes: isolated (each engine alone in a fresh process of its own) and both side by side,
the sweep over precisions and batch sizes in one table, and every report ending with the command that made it."""

from __future__ import annotations

import importlib.util
import json
import os
import re

import numpy as np
import pytest

from sparsebert import cli
from sparsebert.bench import plot, random_source, report, run_engine_bench, run_sweep, sweep_report
from sparsebert.bench.isolated import IsolatedRunError, time_alone

pytest.importorskip("onnxruntime")
FAST = {"seq": 8, "threads": 1, "runs": 2, "warmup": 1, "pause_ms": 0}


def _pid(info: dict) -> int:
    return int(re.fullmatch(r"isolated worker, pid (\d+)", info["process"]).group(1))


def test_isolated_mode_runs_each_engine_alone_in_its_own_process():
    with random_source("tiny", 0.9) as source:
        r = run_engine_bench(source, mode="isolated", command="iso", **FAST)
    assert r["mode"] == "isolated" and list(r["modes"]) == ["isolated"]
    assert list(r["engines"]) == ["sparsebert", "onnxruntime", "pytorch"]
    pids = {name: _pid(e["info"]) for name, e in r["engines"].items()}
    assert len(set(pids.values())) == 3 and os.getpid() not in pids.values()
    assert all(len(e["times_ms"]) == 2 and min(e["times_ms"]) > 0 for e in r["engines"].values())
    # The outputs each worker returned are compared as in the interleaved mode.
    assert r["agree"] and max(r["agreement"].values()) < 1e-4
    assert {"qkv", "attention"} <= set(r["profile_ms"])  # profiled in sparsebert's worker
    text = report.engine_text(r)
    assert "each engine alone in its own process" in text and "interleaved" not in text
    assert text.splitlines()[-1] == "reproduce with: iso"
    json.loads(json.dumps(r))


def test_both_modes_side_by_side():
    with random_source("tiny", 0.8) as source:
        r = run_engine_bench(source, mode="both", peers=["sparsebert", "pytorch"], command="both", **FAST)
    assert r["mode"] == "both" and list(r["modes"]) == ["isolated", "interleaved"]
    assert r["engines"] == r["modes"]["isolated"]["engines"]  # the isolated figures lead
    assert "process" not in r["modes"]["interleaved"]["engines"]["pytorch"]["info"]
    for mode in r["modes"].values():
        assert mode["agree"] and mode["ratios"]["pytorch"] == pytest.approx(
            mode["engines"]["sparsebert"]["median_ms"] / mode["engines"]["pytorch"]["median_ms"])
    text = report.engine_text(r)
    assert "isolated: each engine alone in its own process" in text
    assert "interleaved: interleaved round-robin in one process, 0 ms pause" in text
    iso, inter = (f"{r['modes'][m]['ratios']['pytorch']:.2f}×" for m in ("isolated", "interleaved"))
    assert f"PyTorch eager isolated {iso} / interleaved {inter}" in text
    md = report.engine_markdown(r)
    assert md.count("| engine") == 2 and "*isolated: " in md and "*interleaved: " in md
    assert md.rstrip().splitlines()[-1] == "Reproduce with: `both`"


def test_a_worker_that_fails_names_its_engine(tmp_path):
    np.savez(tmp_path / "inputs.npz", input_ids=np.ones((1, 4), np.int64))
    with pytest.raises(IsolatedRunError, match="sparsebert .isolated worker.: .*no/such.sbert"):
        time_alone("sparsebert", {"sbert": "/no/such.sbert"}, str(tmp_path / "inputs.npz"), 1, None, 1, 0,
                   str(tmp_path))


def test_sweep_over_precisions_and_batches_makes_one_table(tmp_path):
    result = run_sweep("tiny", [0.9], block=4, batch=[1, 2], precisions=["fp32", "int8"],
                       peers=["sparsebert", "onnxruntime"], command="grid", **FAST)
    assert [(p["precision"], p["batch"]) for p in result["points"]] == [("fp32", 1), ("fp32", 2), ("int8", 1),
                                                                        ("int8", 2)]
    assert result["batches"] == [1, 2] and result["precisions"] == ["fp32", "int8"]
    assert all(p["agree"] for p in result["points"])
    md = sweep_report.sweep_markdown(result)
    table = [[c.strip() for c in line.strip("|").split("|")] for line in md.splitlines() if line.startswith("|")]
    assert table[0][:4] == ["precision", "batch", "sparsity", "layouts"]
    assert "ORT int8 ms" in table[0] and "sparsebert / ORT int8" in table[0]
    column = table[0].index("ORT int8 ms")
    assert [row[:2] for row in table[2:]] == [["fp32", "1"], ["fp32", "2"], ["int8", "1"], ["int8", "2"]]
    assert [row[column] == "—" for row in table[2:]] == [True, True, False, False]
    assert "quantize_dynamic" in md and md.rstrip().splitlines()[-1] == "Reproduce with: `grid`"
    if importlib.util.find_spec("matplotlib"):  # one line per engine, precision and batch size
        plot.sweep_plot(result, tmp_path / "grid.png")
        assert (tmp_path / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="block=4"):
        run_sweep("tiny", [0.9], block=1, precisions=["int8"], **FAST)


@pytest.mark.slow
def test_cli_sweep_grid_in_isolated_mode(tmp_path, capsys):
    # The README's performance table is one command: sparsities x {fp32, int8} x batch sizes, isolated.
    out = tmp_path / "grid.json"
    argv = ["bench", "--sweep", "--random", "tiny", "--block", "4", "--sparsities", "90", "--precisions",
            "fp32,int8", "--batch", "1,2", "--mode", "isolated", "--peers", "sparsebert,onnxruntime", "--seq", "8",
            "--runs", "2", "--warmup", "0", "--threads", "1", "--quiet", "--json", str(out)]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["mode"] == "isolated" and len(result["points"]) == 4
    assert all(list(p["modes"]) == ["isolated"] for p in result["points"])
    assert printed.rstrip().splitlines()[-1] == "Reproduce with: `sparsebert " + " ".join(argv) + "`"


@pytest.mark.parametrize("argv, fragment", [
    (["bench", "--random", "tiny", "--precisions", "int8"], "--precisions is for --sweep"),
    (["bench", "--sweep", "--random", "tiny", "--precisions", "int8"], "--block 4"),
    (["bench", "--sweep", "--random", "tiny", "--quantize", "int8"], "--precisions fp32,int8 rather than"),
])
def test_mode_and_grid_errors_are_one_line(argv, fragment, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("sparsebert bench: error: ") and fragment in err, err


@pytest.mark.parametrize("argv", [["bench", "--random", "tiny", "--mode", "apart"],
                                  ["bench", "--sweep", "--precisions", "fp16"]])
def test_bad_mode_or_precision_is_a_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2 and capsys.readouterr().err.startswith("sparsebert bench: error: argument --")
