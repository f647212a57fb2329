"""One model, one shape: sparsebert against its peers on the same weights and inputs, interleaved or isolated.

The steps, each for a reason:

1. the peers' model is rebuilt from the packed file (``models.to_transformers``) and exported once to ONNX,
   so ONNX Runtime, PyTorch and DeepSparse run exactly sparsebert's weights, heads included;
2. every engine runs once and the outputs are compared: a fast wrong answer is not a result;
3. warm-up, then ``runs`` rounds in rotating order, with a pause before each turn so that one engine's
   spinning worker threads (ONNX Runtime's spin for ~40 ms after a run) never steal the next engine's cores,
   and (``rewarm``) an untimed call right before each timed one, so every engine is timed in its steady
   state (see ``timing.interleaved``); or (``mode="isolated"``) each engine alone in a fresh process of its
   own, one after another, which shows whether the pause was enough (``isolated``); or both;
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
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..format import read_model
from ..format.spec import max_sequence_length
from . import (  # runners.X at call time: tests swap in a broken peer
    defaults,
    isolated,
    runners,
    timing,
)
from .deepsparse_peer import DeepSparseError, deepsparse_runner
from .defaults import PEERS
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
# bf16 attention rounds Q, K, V and the probabilities to 8 significant bits (~1e-2 on MiniLM's hidden states);
# 5e-2 still catches a wrong mask or layout.
BF16_ATTENTION_AGREEMENT_ATOL = 5e-2
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


def _engine_names(peers: Sequence[str], int8: bool) -> list[str]:
    """The in-process engines in table order; an int8 model adds sparsebert on its fp32 twin and ORT's int8."""
    names = ["sparsebert"] + (["sparsebert_fp32"] if int8 else [])
    if "onnxruntime" in peers:
        names += ["onnxruntime"] + (["onnxruntime_int8"] if int8 else [])
    return names + (["pytorch"] if "pytorch" in peers else [])


def _write_files(path: str, packed: Any, names: list[str], need_onnx: bool, tmp: str,
                 log: Callable[[str], None]) -> tuple[dict[str, str], Any]:
    """Every file the engines run from, written once (``runners.runner_from_files``), and PyTorch's module."""
    files, module = {"sbert": path}, None
    if "sparsebert_fp32" in names:
        log("packing the fp32 twin of the int8 model")
        files["fp32_sbert"] = runners.write_fp32_twin(packed, tmp)
    if "pytorch" in names or need_onnx:
        log("rebuilding the transformers model from the packed file")
        hf_model = to_transformers(packed)
        if need_onnx:
            log("exporting it to ONNX")
            files["onnx"] = os.path.join(tmp, "model.onnx")
            export_onnx(hf_model, packed.config, files["onnx"])
        if "onnxruntime_int8" in names:
            log("quantizing the ONNX graph with ONNX Runtime's dynamic int8")
            files["onnx_int8"] = runners.quantize_onnx_int8(files["onnx"], tmp)
        if "pytorch" in names:
            module = bert_outputs(hf_model, packed.config)
    return files, module


@dataclass
class Measured:
    """One timing mode's outcome: milliseconds, outputs, and each engine's label and info, by engine."""

    times: dict[str, list[float]]
    hidden: dict[str, np.ndarray]
    labels: dict[str, str]
    infos: dict[str, dict[str, Any]]
    profile: dict[str, float] = field(default_factory=dict)
    deepsparse_error: str | None = None


def _interleaved(names, files, module, inputs, threads, isa, runs, warmup, pause_ms, rewarm, profile_runs,
                 deepsparse_python, log) -> Measured:
    active = {}
    deepsparse_error = None
    try:
        for name in names:
            active[name] = runners.runner_from_files(name, files, inputs, threads, isa, module)
        if deepsparse_python:
            log("starting DeepSparse in its own interpreter (compiling takes a while)")
            try:
                active["deepsparse"] = deepsparse_runner(deepsparse_python, files["onnx"], inputs, threads)
            except DeepSparseError as exc:
                deepsparse_error = str(exc)
                log(f"DeepSparse left out: {exc}")
        log(f"checking outputs agree, then timing {', '.join(active)}: {warmup} warm-up + {runs} runs each, "
            "interleaved")
        hidden = {name: np.array(r.hidden(r.run()), dtype=np.float32) for name, r in active.items()}
        times = timing.interleaved({name: r.run for name, r in active.items()}, runs, warmup, pause_ms / 1e3,
                                   rewarm, {n for n, r in active.items() if r.self_timed})
    finally:
        for r in active.values():
            if r.close is not None:
                r.close()
    profile = {}
    if profile_runs:
        time.sleep(pause_ms / 1e3)  # the last peer's spinning threads would slow the first profiled ops
        profile = active["sparsebert"].engine.profile(inputs, profile_runs)
    return Measured(times, hidden, {n: r.label for n, r in active.items()}, {n: r.info for n, r in active.items()},
                    profile, deepsparse_error)


def _isolated(names, files, inputs, threads, isa, runs, warmup, profile_runs, deepsparse_python, tmp,
              log) -> Measured:
    alone = isolated.run_isolated(names, files, inputs, threads, isa, runs, warmup, tmp, profile_runs, log)
    deepsparse_error = None
    if deepsparse_python:
        log("timing DeepSparse alone in its own interpreter (compiling takes a while)")
        try:
            alone["deepsparse"] = isolated.deepsparse_alone(deepsparse_python, files["onnx"], inputs, threads, runs,
                                                            warmup)
        except DeepSparseError as exc:
            deepsparse_error = str(exc)
            log(f"DeepSparse left out: {exc}")
    return Measured({n: a.times_ms for n, a in alone.items()}, {n: a.hidden for n, a in alone.items()},
                    {n: a.label for n, a in alone.items()}, {n: a.info for n, a in alone.items()},
                    alone["sparsebert"].profile_ms, deepsparse_error)


def run_engine_bench(source: ModelSource, batch: int = 1, seq: int = 128, threads: int = 2,
                     runs: int = DEFAULT_RUNS, warmup: int = DEFAULT_WARMUP, peers: Sequence[str] = PEERS,
                     isa: str | None = None, deepsparse_python: str | None = None,
                     pause_ms: float = DEFAULT_PAUSE_MS, profile_runs: int = PROFILE_RUNS,
                     command: str | None = None, seed: int = 0, workdir: str | None = None,
                     log: Callable[[str], None] | None = None, rewarm: bool = True,
                     mode: str = defaults.MODE) -> dict[str, Any]:
    """Benchmark ``source`` at ``batch`` x ``seq`` with ``threads`` threads; returns the result dict
    (render it with ``report.engine_text`` / ``engine_markdown``, save it as JSON).

    ``mode``: "interleaved" (all engines in this process, round-robin, a pause before each turn), "isolated"
    (each engine alone in a fresh process, one after another: ``isolated``) or "both" (isolated, then
    interleaved; the result holds both under "modes", and the isolated one at the top level)."""
    log = _quiet(log)
    peers = _check_peers(peers)
    for name, value, low in (("batch", batch, 1), ("seq", seq, 1), ("threads", threads, 1), ("runs", runs, 1),
                             ("warmup", warmup, 0), ("profile_runs", profile_runs, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if pause_ms < 0:
        raise ValueError(f"pause_ms must be >= 0, got {pause_ms}")
    if mode not in defaults.MODES:
        raise ValueError(f"mode must be one of {', '.join(defaults.MODES)}, got {mode!r}")

    with tempfile.TemporaryDirectory(prefix="sparsebert-bench-", dir=workdir) as tmp:
        packed = read_model(source.path)
        config, linears = packed.config, [{"name": n, **m} for n, m in packed.linears.items()]
        longest = max_sequence_length(config)
        if seq > longest:
            raise ValueError(f"seq {seq} exceeds the longest sequence the model accepts ({longest}, from "
                             f"max_position_embeddings {config['max_position_embeddings']})")
        inputs = runners.make_inputs(batch, seq, config["vocab_size"], seed)
        names = _engine_names(peers, any(m["layout"] == "block4_int8" for m in linears))
        files, module = _write_files(source.path, packed, names, "onnxruntime" in names or bool(deepsparse_python),
                                     tmp, log)
        del packed  # the engines hold their own copies of the weights

        measured = {}
        for m in defaults.MODE_ORDER[mode]:
            if m == "isolated":
                measured[m] = _isolated(names, files, inputs, threads, isa, runs, warmup, profile_runs,
                                        deepsparse_python, tmp, log)
            else:
                measured[m] = _interleaved(names, files, module, inputs, threads, isa, runs, warmup, pause_ms,
                                           rewarm, profile_runs if not measured else 0, deepsparse_python, log)

    return _result(source, config, linears, batch, seq, threads, runs, warmup, pause_ms, rewarm, mode, measured,
                   command)


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


def _timed(measured: Measured, work: dict[str, float], batch: int, int8: bool) -> dict[str, Any]:
    """One mode's table: engine rows, ratios to sparsebert, agreement of the outputs."""
    engines = {name: _engine_row(measured.labels[name], timing.summarize(times), work, batch, measured.infos[name])
               for name, times in measured.times.items()}
    sb_med = engines["sparsebert"]["median_ms"]
    agreement = _agreement(measured.hidden)
    # int8 engines (sparsebert's, ORT's dynamic int8) agree with the fp32 ones to their rounding only.
    atol = {k: INT8_AGREEMENT_ATOL if (int8 and "sparsebert" in k.split(" vs ")) or "int8" in k else AGREEMENT_ATOL
            for k in agreement}
    if any(info.get("attention") == "bf16" for info in measured.infos.values()):  # sparsebert's engines, all alike
        atol = {k: max(v, BF16_ATTENTION_AGREEMENT_ATOL) if "sparsebert" in k else v for k, v in atol.items()}
    return {
        "engines": engines,
        "ratios": {name: sb_med / row["median_ms"] for name, row in engines.items() if name != "sparsebert"},
        "order": list(measured.times),
        "agreement": agreement,
        "agreement_atol": atol,
        "agree": all(v <= atol[k] for k, v in agreement.items()),
    }


def _result(source, config, linears, batch, seq, threads, runs, warmup, pause_ms, rewarm, mode, measured,
            command) -> dict[str, Any]:
    work = encoder_flops(config, linears, batch, seq)
    int8 = any(r["layout"] == "block4_int8" for r in linears)
    modes = {m: _timed(meas, work, batch, int8) for m, meas in measured.items()}
    first_mode = next(iter(modes))
    first = modes[first_mode]
    total_sparsity = 1.0 - sum(r["nnz"] for r in linears) / sum(r["shape"][0] * r["shape"][1] for r in linears)
    layouts: dict[str, int] = {}
    for row in linears:
        layouts[row["layout"]] = layouts.get(row["layout"], 0) + 1
    return {
        "kind": "engine",
        "environment": environment(isa=first["engines"]["sparsebert"]["info"]["isa"], threads=threads,
                                   command=command),
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
        "mode": mode,
        "flops": work,
        # The first mode's figures at the top level (isolated when both ran); every mode's under "modes".
        "engines": first["engines"],
        "ratios": first["ratios"],  # sparsebert median / peer median (< 1: sparsebert is faster)
        "interleaved": first["order"],
        "agreement": first["agreement"],
        "agreement_atol": first["agreement_atol"],
        "agree": all(t["agree"] for t in modes.values()),
        "modes": modes,
        "profile_ms": next((meas.profile for meas in measured.values() if meas.profile), {}),
        "deepsparse_error": next((meas.deepsparse_error for meas in measured.values() if meas.deepsparse_error),
                                 None),
        "python_executable": sys.executable,
    }


__all__ = ["AGREEMENT_ATOL", "DEFAULT_PAUSE_MS", "DEFAULT_RUNS", "DEFAULT_WARMUP", "run_engine_bench"]
