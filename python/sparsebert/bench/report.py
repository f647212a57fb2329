"""Render benchmark results: a text report for the terminal, Markdown tables for results/, JSON for machines.

Every table is preceded by the lines that make it reproducible (machine, ISA, threads, commit, date, the
exact command), because a table copied without them is a number nobody can check.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from .environment import machine_line
from .runners import LABELS

# Short column names for the peers in Markdown tables.
SHORT = {"sparsebert": "sparsebert", "onnxruntime": "ORT", "pytorch": "PyTorch", "deepsparse": "DeepSparse"}
OWN_PROCESS = ("DeepSparse 1.8 needs Python <= 3.11 and numpy < 2, so it runs in a child process of its own "
               "interpreter, driven over a pipe: it takes its turns in the same round-robin, and its times are "
               "measured inside that process")


def _ms(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.2f}" if value < 100 else f"{value:.1f}"


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}×"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]) -> list[str]:
    """A Markdown table, cells padded so the source reads as a table too."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]

    def line(cells: Sequence[str]) -> str:
        parts = [str(c).rjust(w) if r else str(c).ljust(w) for c, w, r in zip(cells, widths, right)]
        return "| " + " | ".join(parts) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if r else ("-" * (w + 2)) for w, r in zip(widths, right)) + "|"
    return [line(header), rule, *(line(r) for r in rows)]


def _provenance(env: dict[str, Any]) -> list[str]:
    return [f"Machine: {machine_line(env)}", f"Command: `{env['command']}`"]


# ---------------------------------------------------------------------------------------------- engine


def _timing_words(result: dict[str, Any]) -> str:
    how = "each timed call right after an untimed one of the same engine" if result.get("rewarm", True) else \
        "each timed call right after the other engines' (cold)"
    return f"interleaved round-robin, {result['pause_ms']:g} ms pause before each turn, {how}"


def _run_line(result: dict[str, Any]) -> str:
    return (f"batch {result['batch']} × seq {result['seq']}, {result['threads']} threads, "
            f"{result['warmup']} warm-up + {result['runs']} timed runs per engine, {_timing_words(result)}")


def _work_line(result: dict[str, Any]) -> str:
    f = result["flops"]
    return (f"work per run: {f['dense_gflop']:.2f} GFLOP dense-equivalent, {f['real_gflop']:.2f} GFLOP real "
            f"(linear weights {result['model']['sparsity']:.1%} zero; attention {f['attention_flop'] / 1e9:.2f} "
            f"GFLOP); layouts: {', '.join(f'{n} {k}' for k, n in result['model']['layouts'].items())}")


def _engine_rows(result: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name, e in result["engines"].items():
        label = e["label"] + (" *" if name == "deepsparse" else "")
        ratio = "1.00×" if name == "sparsebert" else _ratio(result["ratios"].get(name))
        rows.append([label, _ms(e["median_ms"]), _ms(e["p10_ms"]), f"{e['throughput_seq_s']:.1f}",
                     f"{e['dense_gflops']:.1f}", f"{e['real_gflops']:.1f}", ratio])
    return rows


ENGINE_HEADER = ("engine", "median ms", "p10 ms", "seq/s", "GFLOP/s dense-eq", "GFLOP/s real", "sparsebert / engine")


def _agreement_line(result: dict[str, Any]) -> str:
    def name(key: str) -> str:
        return " vs ".join(LABELS.get(p, p) for p in key.split(" vs "))

    pairs = ", ".join(f"{name(k)} {v:.1e}" for k, v in result["agreement"].items())
    atol = result["agreement_atol"]  # one tolerance, or (int8 runs) one per pair
    if isinstance(atol, dict):
        bad = [k for k, v in result["agreement"].items() if v > atol[k]]
        verdict = "OK" if not bad else "MISMATCH (" + ", ".join(f"{name(k)} > {atol[k]:g}" for k in bad) + ")"
    else:
        verdict = "OK" if result["agree"] else f"MISMATCH (tolerance {atol:g})"
    return f"agreement, max |a - b| on last_hidden_state: {pairs or 'no peers'} -> {verdict}"


def _profile_line(result: dict[str, Any]) -> str | None:
    profile = result.get("profile_ms") or {}
    total = sum(profile.values())
    if not total:
        return None
    parts = ", ".join(f"{op} {ms:.2f} ms ({ms / total:.0%})" for op, ms in
                      sorted(profile.items(), key=lambda kv: -kv[1]))
    return f"sparsebert per-op profile (mean of extra runs, summed over layers, total {total:.2f} ms): {parts}"


def engine_text(result: dict[str, Any]) -> str:
    """The terminal report of ``run_engine_bench``."""
    env = result["environment"]
    lines = [f"sparsebert bench: {result['model']['description']}", "  " + _run_line(result),
             "  " + _work_line(result), "  " + machine_line(env), ""]
    header, rows = ENGINE_HEADER, _engine_rows(result)
    widths = [max(len(c) for c in col) for col in zip(header, *rows)]
    for cells in (header, *rows):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))))
    if "deepsparse" in result["engines"]:
        lines.append(f"* {OWN_PROCESS}.")
    if result.get("deepsparse_error"):
        lines.append(f"DeepSparse: {result['deepsparse_error']}")
    lines += ["", _agreement_line(result)]
    profile = _profile_line(result)
    if profile:
        lines.append(profile)
    return "\n".join(lines)


def engine_markdown(result: dict[str, Any]) -> str:
    """A Markdown section for one engine benchmark."""
    lines = [f"**{result['model']['description']}**, {_run_line(result)}.", "", *_provenance(result["environment"]),
             "", _work_line(result) + ".", ""]
    lines += _table(ENGINE_HEADER, _engine_rows(result), [False] + [True] * 6)
    if "deepsparse" in result["engines"]:
        lines += ["", f"\\* {OWN_PROCESS}."]
    lines += ["", _agreement_line(result) + "."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- sweep


def sweep_columns(result: dict[str, Any]) -> list[str]:
    engines = result["engines_run"]
    cols = ["sparsity", "layouts", "sparsebert ms"]
    for peer in ("onnxruntime", "pytorch"):
        if peer in engines:
            cols += [f"{SHORT[peer]} ms", f"sparsebert / {SHORT[peer]}"]
    if "deepsparse" in engines:
        cols += ["DeepSparse ms *", "sparsebert / DeepSparse"]
    cols.append("sparsebert GFLOP/s real")
    return cols


def sweep_rows(result: dict[str, Any]) -> list[list[str]]:
    rows = []
    for point in result["points"]:
        e, r = point["engines"], point["ratios"]
        layouts = ", ".join(f"{k} {n}" for k, n in sorted(point["model"]["layouts"].items(), key=lambda kv: -kv[1]))
        row = [f"{point['sparsity']:.0%}", layouts, _ms(e["sparsebert"]["median_ms"])]
        for peer in ("onnxruntime", "pytorch"):
            if peer in result["engines_run"]:
                row += [_ms(e[peer]["median_ms"]) if peer in e else "—", _ratio(r.get(peer))]
        if "deepsparse" in result["engines_run"]:
            row += [_ms(e["deepsparse"]["median_ms"]) if "deepsparse" in e else "—", _ratio(r.get("deepsparse"))]
        row.append(f"{e['sparsebert']['real_gflops']:.1f}")
        rows.append(row)
    return rows


def sweep_markdown(result: dict[str, Any]) -> str:
    """The sweep as Markdown: a caption naming model, machine, ISA, threads, commit and command, then the table."""
    env = result["environment"]
    pruning = "4-block" if result["block"] == 4 else "unstructured"
    lines = [f"### {result['model_name']}: latency vs sparsity ({pruning} magnitude pruning), batch {result['batch']} "
             f"× seq {result['seq']}, {result['threads']} threads", "",
             *_provenance(env), "",
             f"Median of {result['runs']} timed runs per engine after {result['warmup']} warm-up at each point, "
             f"{_timing_words(result)}. Ratios are "
             "sparsebert / engine (below 1: sparsebert is faster). ONNX Runtime and PyTorch run the same pruned "
             "weights densely, so their latency does not depend on sparsity; they are re-measured at every point "
             "for the ratio.", ""]
    cols = sweep_columns(result)
    lines += _table(cols, sweep_rows(result), [False, False] + [True] * (len(cols) - 2))
    if "deepsparse" in result["engines_run"]:
        lines += ["", f"\\* {OWN_PROCESS}."]
    bad = [f"{p['sparsity']:.0%}" for p in result["points"] if not p["agree"]]
    lines += ["", "Outputs agree at every point (max |difference| on last_hidden_state "
              f"{max((v for p in result['points'] for v in p['agreement'].values()), default=0.0):.1e})."
              if not bad else f"**Outputs disagree at {', '.join(bad)}.**"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- kernels


KERNEL_HEADER = ("N × K", "tokens", "layout", "threads", "ms", "GFLOP/s real", "GFLOP/s dense-eq", "% of peak",
                 "speed-up vs dense")


def kernel_rows(result: dict[str, Any]) -> list[list[str]]:
    rows = []
    for r in result["rows"]:
        rows.append([f"{r['n']} × {r['k']}", str(r["tokens"]), r["layout_label"], str(r["threads"]),
                     f"{r['median_ms']:.3f}", f"{r['real_gflops']:.1f}", f"{r['dense_gflops']:.1f}",
                     f"{r['peak_fraction']:.0%}", "—" if r["speedup_vs_dense"] is None else
                     f"{r['speedup_vs_dense']:.2f}×"])
    return rows


def kernel_markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    peaks = ", ".join(f"{isa} {p:.0f}" for isa, p in result["fma_peak_gflops"].items())
    lines = [f"### Sparse GEMM kernels: Y[N, T] = W[N, K] · X[K, T], fp32, isa {result['isa']}", "",
             *_provenance(env), "",
             f"Median of {result['runs']} timed runs (kernel only, activations already in the engine's layout), "
             f"layouts interleaved. Real GFLOP/s counts 2·T·nnz, dense-equivalent 2·T·N·K; % of peak is real "
             f"GFLOP/s over the measured single-thread FMA peak ({peaks} GFLOP/s) times the threads.", ""]
    lines += _table(KERNEL_HEADER, kernel_rows(result), [False, True, False] + [True] * 6)
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- JSON


def write_json(result: dict[str, Any], path: str | os.PathLike) -> None:
    """Write a result as indented JSON (atomically, so a reader never sees half a file)."""
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1, allow_nan=False, default=_json_default)
        f.write("\n")
    os.replace(tmp, path)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot store {type(obj).__name__} in JSON")


__all__ = ["engine_markdown", "engine_text", "kernel_markdown", "kernel_rows", "sweep_columns", "sweep_markdown",
           "sweep_rows", "write_json"]
