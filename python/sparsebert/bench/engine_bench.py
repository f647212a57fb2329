"""One model, one shape: sparsebert against its peers on the same weights and inputs, interleaved.

The steps, each for a reason:

1. the peers' model is rebuilt from the packed file (``models.to_transformers``) and exported once to ONNX,
   so ONNX Runtime, PyTorch and DeepSparse run exactly sparsebert's weights, heads included;
2. every engine runs once and the outputs are compared: a fast wrong answer is not a result;
3. warm-up, then ``runs`` rounds in rotating order, with a pause before each turn so that one engine's
   spinning worker threads (ONNX Runtime's spin for ~40 ms after a run) never steal the next engine's cores,
   and (``rewarm``) an untimed call right before each timed one, so every engine is timed in its steady
   state (see ``timing.interleaved``);
4. medians, p10 and ratios to sparsebert; GFLOP/s from ``flops``; the engine's per-op profile.

DeepSparse, if asked for, runs in a child process of its own interpreter (it cannot share ours) that performs
one inference per request, so it takes its turns in the same round-robin (``deepsparse_peer``).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..format import read_model
from ..format.spec import max_sequence_length
from . import defaults, runners, timing  # runners.X at call time: tests swap in a broken peer
from .defaults import PEERS
from .deepsparse_peer import DeepSparseError, deepsparse_runner
from .environment import environment
from .flops import encoder_flops, gflops
from .models import ModelSource, to_transformers
from .onnx_export import bert_outputs, export_onnx

DEFAULT_RUNS, DEFAULT_WARMUP, DEFAULT_PAUSE_MS = defaults.RUNS, defaults.WARMUP, defaults.PAUSE_MS
# Engines agree to ~1e-5 on BERT outputs (fp32, different summation orders); 1e-3 still catches every real
# bug (a wrong mask, bias or activation moves outputs by >= 1e-2).
AGREEMENT_ATOL = 1e-3
# An int8 engine differs from fp32 ones by its activation and weight rounding (~1e-2 on BERT-base hidden states);
# 0.25 still catches a wrong scale, zero point or layout, which move outputs by O(1).
INT8_AGREEMENT_ATOL = 0.25
PROFILE_RUNS = defaults.PROFILE_RUNS


def _check_peers(peers: Sequence[str]) -> list[str]:
    unknown = [p for p in peers if p not in PEERS]
    if unknown:
        raise ValueError(f"unknown peer(s) {', '.join(unknown)}; choose from {', '.join(PEERS)} "
                         "(DeepSparse is added with --deepsparse-python)")
    if "sparsebert" not in peers:
        raise ValueError("the peers must include sparsebert: every figure is a ratio to it")
    return [p for p in PEERS if p in peers]  # canonical order, no duplicates


def _max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def _agreement(hidden: dict[str, np.ndarray]) -> dict[str, float]:
    """Max |a - b| on last_hidden_state for every pair of engines, sparsebert's pairs first."""
    names = list(hidden)
    return {f"{a} vs {b}": _max_abs_diff(hidden[a], hidden[b])
            for i, a in enumerate(names) for b in names[i + 1:]}


def _quiet(log: Callable[[str], None] | None) -> Callable[[str], None]:
    return log if log is not None else (lambda _msg: None)


def run_engine_bench(source: ModelSource, batch: int = 1, seq: int = 128, threads: int = 2,
                     runs: int = DEFAULT_RUNS, warmup: int = DEFAULT_WARMUP, peers: Sequence[str] = PEERS,
                     isa: str | None = None, deepsparse_python: str | None = None,
                     pause_ms: float = DEFAULT_PAUSE_MS, profile_runs: int = PROFILE_RUNS,
                     command: str | None = None, seed: int = 0, workdir: str | None = None,
                     log: Callable[[str], None] | None = None, rewarm: bool = True) -> dict[str, Any]:
    """Benchmark ``source`` at ``batch`` x ``seq`` with ``threads`` threads; returns the result dict
    (render it with ``report.engine_text`` / ``engine_markdown``, save it as JSON)."""
    log = _quiet(log)
    peers = _check_peers(peers)
    for name, value, low in (("batch", batch, 1), ("seq", seq, 1), ("threads", threads, 1), ("runs", runs, 1),
                             ("warmup", warmup, 0), ("profile_runs", profile_runs, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if pause_ms < 0:
        raise ValueError(f"pause_ms must be >= 0, got {pause_ms}")

    with tempfile.TemporaryDirectory(prefix="sparsebert-bench-", dir=workdir) as tmp:
        packed = read_model(source.path)
        config, linears = packed.config, [{"name": n, **m} for n, m in packed.linears.items()]
        longest = max_sequence_length(config)
        if seq > longest:
            raise ValueError(f"seq {seq} exceeds the longest sequence the model accepts ({longest}, from "
                             f"max_position_embeddings {config['max_position_embeddings']})")
        inputs = runners.make_inputs(batch, seq, config["vocab_size"], seed)
        sb = runners.sparsebert_runner(source.path, inputs, threads, isa)
        active = {"sparsebert": sb}
        int8 = any(m["layout"] == "block4_int8" for m in linears)
        if int8:
            log("packing the fp32 twin of the int8 model")
            active["sparsebert_fp32"] = runners.sparsebert_fp32_runner(packed, inputs, threads, isa, tmp)

        onnx_path = None
        need_onnx = "onnxruntime" in peers or deepsparse_python
        if "pytorch" in peers or need_onnx:
            log("rebuilding the transformers model from the packed file")
            hf_model = to_transformers(packed)
            if need_onnx:
                log("exporting it to ONNX")
                onnx_path = os.path.join(tmp, "model.onnx")
                export_onnx(hf_model, config, onnx_path)
            if "onnxruntime" in peers:
                active["onnxruntime"] = runners.onnxruntime_runner(onnx_path, inputs, threads)
                if int8:
                    log("quantizing the ONNX graph with ONNX Runtime's dynamic int8")
                    active["onnxruntime_int8"] = runners.onnxruntime_int8_runner(onnx_path, inputs, threads, tmp)
            if "pytorch" in peers:
                active["pytorch"] = runners.pytorch_runner(bert_outputs(hf_model, config), inputs, threads)
        del packed  # the engine and the peers hold their own copies of the weights

        deepsparse_error = None
        try:
            if deepsparse_python:
                log("starting DeepSparse in its own interpreter (compiling takes a while)")
                try:
                    active["deepsparse"] = deepsparse_runner(deepsparse_python, onnx_path, inputs, threads)
                except DeepSparseError as exc:
                    deepsparse_error = str(exc)
                    log(f"DeepSparse left out: {exc}")

            log(f"checking outputs agree, then timing {', '.join(active)}: {warmup} warm-up + {runs} runs each, "
                "interleaved")
            hidden = {name: np.array(r.hidden(r.run()), dtype=np.float32) for name, r in active.items()}
            times = timing.interleaved({name: r.run for name, r in active.items()}, runs, warmup,
                                       pause_ms / 1e3, rewarm, {n for n, r in active.items() if r.self_timed})
        finally:
            for r in active.values():
                if r.close is not None:
                    r.close()
        profile = {}
        if profile_runs:
            time.sleep(pause_ms / 1e3)  # the last peer's spinning threads would slow the first profiled ops
            profile = sb.engine.profile(inputs, profile_runs)

    return _result(source, config, linears, batch, seq, threads, runs, warmup, pause_ms, rewarm, active, times,
                   hidden, profile, deepsparse_error, command)


def _engine_row(label: str, stats: dict[str, Any], work: dict[str, float], batch: int,
                info: dict[str, Any]) -> dict[str, Any]:
    med = stats["median_ms"]
    return {
        "label": label,
        **{k: v for k, v in stats.items() if k != "times_ms"},
        "throughput_seq_s": batch / (med * 1e-3),
        "dense_gflops": gflops(work["dense_flop"], med),
        "real_gflops": gflops(work["real_flop"], med),
        "info": info,
        "times_ms": stats["times_ms"],
    }


def _result(source, config, linears, batch, seq, threads, runs, warmup, pause_ms, rewarm, runners, times, hidden,
            profile, deepsparse_error, command) -> dict[str, Any]:
    work = encoder_flops(config, linears, batch, seq)
    sb = runners["sparsebert"]
    engines = {name: _engine_row(r.label, timing.summarize(times[name]), work, batch, r.info)
               for name, r in runners.items()}
    sb_med = engines["sparsebert"]["median_ms"]
    ratios = {name: sb_med / row["median_ms"] for name, row in engines.items() if name != "sparsebert"}

    agreement = _agreement(hidden)
    int8 = any(r["layout"] == "block4_int8" for r in linears)
    # int8 engines (sparsebert's, ORT's dynamic int8) agree with the fp32 ones to their rounding only.
    atol = {k: INT8_AGREEMENT_ATOL if (int8 and "sparsebert" in k.split(" vs ")) or "int8" in k else AGREEMENT_ATOL
            for k in agreement}
    total_sparsity = 1.0 - sum(r["nnz"] for r in linears) / sum(r["shape"][0] * r["shape"][1] for r in linears)
    layouts: dict[str, int] = {}
    for row in linears:
        layouts[row["layout"]] = layouts.get(row["layout"], 0) + 1
    return {
        "kind": "engine",
        "environment": environment(isa=sb.info["isa"], threads=threads, command=command),
        "model": {
            "description": source.description,
            "origin": source.origin,
            "config": {k: v for k, v in config.items() if k != "id2label"},
            "sparsity": total_sparsity,
            "layouts": layouts,
        },
        "batch": batch,
        "seq": seq,
        "threads": threads,
        "runs": runs,
        "warmup": warmup,
        "pause_ms": pause_ms,
        "rewarm": rewarm,
        "interleaved": list(times),
        "flops": work,
        "engines": engines,
        "ratios": ratios,  # sparsebert median / peer median (< 1: sparsebert is faster)
        "agreement": agreement,
        "agreement_atol": atol,
        "agree": all(v <= atol[k] for k, v in agreement.items()),
        "profile_ms": profile,
        "deepsparse_error": deepsparse_error,
        "python_executable": sys.executable,
    }


__all__ = ["AGREEMENT_ATOL", "DEFAULT_PAUSE_MS", "DEFAULT_RUNS", "DEFAULT_WARMUP", "run_engine_bench"]
