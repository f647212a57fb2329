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

from . import isolated
from .defaults import INT8_PEAK_FACTOR
from .environment import machine_line
from .runners import LABELS

# Short column names for the peers in Markdown tables, in the order sweep tables show them.
SHORT = {"sparsebert": "sparsebert", "onnxruntime": "ORT", "onnxruntime_int8": "ORT int8", "pytorch": "PyTorch",
         "deepsparse": "DeepSparse"}
OWN_PROCESS = ("DeepSparse 1.8 needs Python <= 3.11 and numpy < 2, so it runs in a child process of its own "
               "interpreter, driven over a pipe, and its times are measured inside that process")
OWN_PROCESS_BY_MODE = {"interleaved": "interleaved, it takes its turns in the same round-robin",
                       "isolated": "isolated, it runs alone after the other engines"}


def ms_text(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.2f}" if value < 100 else f"{value:.1f}"


def ratio_text(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}×"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]) -> list[str]:
    """A Markdown table, cells padded so the source reads as a table too."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]

    def line(cells: Sequence[str]) -> str:
        parts = [str(c).rjust(w) if r else str(c).ljust(w) for c, w, r in zip(cells, widths, right)]
        return "| " + " | ".join(parts) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if r else ("-" * (w + 2)) for w, r in zip(widths, right)) + "|"
    return [line(header), rule, *(line(r) for r in rows)]


def provenance(env: dict[str, Any]) -> list[str]:
    return [f"Machine: {machine_line(env)}", f"Command: `{env['command']}`"]


def reproduce_line(env: dict[str, Any], markdown: bool) -> str:
    """The last line of every report: the command that produced it."""
    return f"Reproduce with: `{env['command']}`" if markdown else f"reproduce with: {env['command']}"


def timing_method(mode: str, pause_ms: float = 0.0, rewarm: bool = True) -> str:
    """How one timing mode ran the engines, in words (tables, the demo)."""
    if mode == "isolated":
        return isolated.METHOD
    how = "each timed call right after an untimed one of the same engine" if rewarm else \
        "each timed call right after the other engines' (cold)"
    return f"interleaved round-robin in one process, {pause_ms:g} ms pause before each turn, {how}"


def method_line(mode: str, runs: int, warmup: int, threads: int, pause_ms: float = 0.0, rewarm: bool = True) -> str:
    """One line saying how a latency was measured, e.g. "median of 20 runs after 3 warm-up, each engine alone in
    its own process, one after another, 2 threads"."""
    return (f"median of {runs} runs after {warmup} warm-up, {timing_method(mode, pause_ms, rewarm)}, "
            f"{threads} thread{'s' if threads != 1 else ''}")


def result_modes(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A result's timing modes and their tables (results saved before the isolated mode: interleaved only)."""
    keys = ("engines", "ratios", "agreement", "agreement_atol", "agree")
    return result.get("modes") or {"interleaved": {k: result[k] for k in keys if k in result}}


# ---------------------------------------------------------------------------------------------- engine


def own_process_note(result: dict[str, Any]) -> str:
    return "; ".join([OWN_PROCESS, *(OWN_PROCESS_BY_MODE[m] for m in result_modes(result))])


def timing_words(result: dict[str, Any], modes: list[str] | None = None) -> str:
    """How ``result`` (an engine or sweep result, for its pause and rewarm) timed each of ``modes``."""
    modes = modes or list(result_modes(result))
    return "; and ".join(timing_method(m, result["pause_ms"], result.get("rewarm", True)) for m in modes)


def _run_line(result: dict[str, Any]) -> str:
    return (f"batch {result['batch']} × seq {result['seq']}, {result['threads']} threads, "
            f"{result['warmup']} warm-up + {result['runs']} timed runs per engine, {timing_words(result)}")


def _work_line(result: dict[str, Any]) -> str:
    f = result["flops"]
    return (f"work per run: {f['dense_gflop']:.2f} GFLOP dense-equivalent, {f['real_gflop']:.2f} GFLOP real "
            f"(linear weights {result['model']['sparsity']:.1%} zero; attention {f['attention_flop'] / 1e9:.2f} "
            f"GFLOP); layouts: {', '.join(f'{n} {k}' for k, n in result['model']['layouts'].items())}")


def _engine_rows(timed: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name, e in timed["engines"].items():
        label = e["label"] + (" *" if name == "deepsparse" else "")
        ratio = "1.00×" if name == "sparsebert" else ratio_text(timed["ratios"].get(name))
        rows.append([label, ms_text(e["median_ms"]), ms_text(e["p10_ms"]), f"{e['throughput_seq_s']:.1f}",
                     f"{e['dense_gflops']:.1f}", f"{e['real_gflops']:.1f}", ratio])
    return rows


ENGINE_HEADER = ("engine", "median ms", "p10 ms", "seq/s", "GFLOP/s dense-eq", "GFLOP/s real", "sparsebert / engine")


def _agreement_line(result: dict[str, Any]) -> str:
    """``result``: a result or one of its modes (both hold agreement, agreement_atol and agree)."""
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


def _mode_sections(result: dict[str, Any]) -> list[tuple[str | None, dict[str, Any]]]:
    """(heading or None, the mode's table) per timing mode; a heading only when several modes ran."""
    modes = result_modes(result)
    if len(modes) == 1:
        return [(None, next(iter(modes.values())))]
    return [(f"{m}: {timing_method(m, result['pause_ms'], result.get('rewarm', True))}", t) for m, t in modes.items()]


def _modes_line(result: dict[str, Any]) -> str | None:
    """sparsebert / peer in every mode side by side, when several ran."""
    modes = result_modes(result)
    if len(modes) < 2:
        return None
    peers = list(dict.fromkeys(p for t in modes.values() for p in t["ratios"]))
    parts = [f"{LABELS.get(p, p)} " + " / ".join(f"{m} {ratio_text(t['ratios'].get(p))}" for m, t in modes.items())
             for p in peers]
    return "sparsebert / engine by timing mode: " + "; ".join(parts)


def engine_text(result: dict[str, Any]) -> str:
    """The terminal report of ``run_engine_bench``; its last line is the command that reproduces it."""
    env = result["environment"]
    lines = [f"sparsebert bench: {result['model']['description']}", "  " + _run_line(result),
             "  " + _work_line(result), "  " + machine_line(env)]
    for heading, timed in _mode_sections(result):
        lines.append("")
        if heading:
            lines.append(heading)
        header, rows = ENGINE_HEADER, _engine_rows(timed)
        widths = [max(len(c) for c in col) for col in zip(header, *rows)]
        for cells in (header, *rows):
            lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                   for i, (c, w) in enumerate(zip(cells, widths))))
        lines.append(_agreement_line(timed))
    if "deepsparse" in result["engines"]:
        lines.append(f"* {own_process_note(result)}.")
    if result.get("deepsparse_error"):
        lines.append(f"DeepSparse: {result['deepsparse_error']}")
    lines += [""] + [line for line in (_modes_line(result), _profile_line(result)) if line]
    lines.append(reproduce_line(env, markdown=False))
    return "\n".join(lines)


def engine_markdown(result: dict[str, Any]) -> str:
    """A Markdown section for one engine benchmark; its last line is the command that reproduces it."""
    lines = [f"**{result['model']['description']}**, {_run_line(result)}.", "", *provenance(result["environment"]),
             "", _work_line(result) + "."]
    for heading, timed in _mode_sections(result):
        lines += ["", f"*{heading}*", ""] if heading else [""]
        lines += markdown_table(ENGINE_HEADER, _engine_rows(timed), [False] + [True] * 6)
        lines += ["", _agreement_line(timed) + "."]
    if "deepsparse" in result["engines"]:
        lines += ["", f"\\* {own_process_note(result)}."]
    modes_line = _modes_line(result)
    if modes_line:
        lines += ["", modes_line + "."]
    lines += ["", reproduce_line(result["environment"], markdown=True)]
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
    lines = [f"### Sparse GEMM kernels: Y[N, T] = W[N, K] · X[K, T], isa {result['isa']}", "",
             *provenance(env), "",
             f"Median of {result['runs']} timed runs (kernel only, activations already in the engine's layout), "
             f"layouts interleaved. Real GFLOP/s counts 2·T·nnz, dense-equivalent 2·T·N·K; % of peak is real "
             f"GFLOP/s over the measured single-thread FMA peak ({peaks} GFLOP/s) times the threads. int8 rows count "
             f"an integer multiply-add as 2 operations and take {INT8_PEAK_FACTOR}× the FMA peak as theirs (a VNNI "
             f"dot product does 64 multiply-adds where an FMA does 16, at the same rate).", ""]
    lines += markdown_table(KERNEL_HEADER, kernel_rows(result), [False, True, False] + [True] * 6)
    lines += ["", reproduce_line(env, markdown=True)]
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


__all__ = ["SHORT", "engine_markdown", "engine_text", "kernel_markdown", "kernel_rows", "markdown_table",
           "method_line", "ms_text", "own_process_note", "provenance", "ratio_text", "reproduce_line", "result_modes",
           "timing_method", "timing_words", "write_json"]
