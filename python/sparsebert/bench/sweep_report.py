"""The sweep's Markdown table: one row per point (and per precision, batch and timing mode when they vary).

Captioned like every report (machine, ISA, threads, commit, command) and ended with the command again.
"""

from __future__ import annotations

from typing import Any

from .report import (
    SHORT,
    markdown_table,
    ms_text,
    own_process_note,
    provenance,
    ratio_text,
    reproduce_line,
    result_modes,
    timing_words,
)
from .runners import INT8_RECIPE

SWEEP_PEERS = ("onnxruntime", "onnxruntime_int8", "pytorch", "deepsparse")


def _sweep_keys(result: dict[str, Any]) -> list[str]:
    """The columns that name a row beyond its sparsity: precision, batch and timing mode, when they vary."""
    points = result["points"]
    keys = [k for k in ("precision", "batch") if len({p.get(k, result.get(k)) for p in points}) > 1]
    return keys + (["timing"] if len(result_modes(points[0])) > 1 else [])


def sweep_columns(result: dict[str, Any]) -> list[str]:
    engines = result["engines_run"]
    cols = [*_sweep_keys(result), "sparsity", "layouts", "sparsebert ms"]
    for peer in SWEEP_PEERS:
        if peer in engines:
            star = " *" if peer == "deepsparse" else ""
            cols += [f"{SHORT[peer]} ms{star}", f"sparsebert / {SHORT[peer]}"]
    cols.append("sparsebert GFLOP/s real")
    return cols


def sweep_rows(result: dict[str, Any]) -> list[list[str]]:
    rows, keys = [], _sweep_keys(result)
    for point in result["points"]:
        layouts = ", ".join(f"{k} {n}" for k, n in sorted(point["model"]["layouts"].items(), key=lambda kv: -kv[1]))
        for mode, timed in result_modes(point).items():
            e, r = timed["engines"], timed["ratios"]
            named = {"precision": point.get("precision", "fp32"), "batch": str(point.get("batch")), "timing": mode}
            sb_ms = ms_text(e["sparsebert"]["median_ms"])
            row = [*(named[k] for k in keys), f"{point['sparsity']:.0%}", layouts, sb_ms]
            for peer in SWEEP_PEERS:
                if peer in result["engines_run"]:
                    row += [ms_text(e[peer]["median_ms"]) if peer in e else "—", ratio_text(r.get(peer))]
            row.append(f"{e['sparsebert']['real_gflops']:.1f}")
            rows.append(row)
    return rows


def sweep_markdown(result: dict[str, Any]) -> str:
    """The sweep as Markdown: a caption naming model, machine, ISA, threads, commit and command, then the table,
    then the command again."""
    env = result["environment"]
    pruning = "4-block" if result["block"] == 4 else "unstructured"
    batches = ", ".join(map(str, result.get("batches") or [result["batch"]]))
    precisions = " and ".join(result.get("precisions") or ["fp32"])
    lines = [f"### {result['model_name']}: latency vs sparsity ({pruning} magnitude pruning, {precisions}), "
             f"batch {batches} × seq {result['seq']}, {result['threads']} threads", "",
             *provenance(env), "",
             f"Median of {result['runs']} timed runs per engine after {result['warmup']} warm-up at each point, "
             f"{timing_words(result, list(result_modes(result['points'][0])))}. Ratios are "
             "sparsebert / engine (below 1: sparsebert is faster). ONNX Runtime and PyTorch run the same pruned "
             "weights densely, so their latency does not depend on sparsity; they are re-measured at every point "
             "for the ratio.", ""]
    if "int8" in (result.get("precisions") or []):
        lines[-1:] = [f"int8 rows: sparsebert runs the encoder's linears as int8 4-blocks; the other engines run the "
                      f"same dequantized weights in fp32, and ORT int8 is ONNX Runtime's {INT8_RECIPE} of that graph.",
                      ""]
    cols = sweep_columns(result)
    left = len(_sweep_keys(result)) + 2
    lines += markdown_table(cols, sweep_rows(result), [False] * left + [True] * (len(cols) - left))
    if "deepsparse" in result["engines_run"]:
        lines += ["", f"\\* {own_process_note(result['points'][0])}."]
    bad = [f"{p['sparsity']:.0%}" for p in result["points"] if not p["agree"]]
    lines += ["", "Outputs agree at every point (max |difference| on last_hidden_state "
              f"{max((v for p in result['points'] for v in p['agreement'].values()), default=0.0):.1e})."
              if not bad else f"**Outputs disagree at {', '.join(bad)}.**"]
    lines += ["", reproduce_line(env, markdown=True)]
    return "\n".join(lines) + "\n"


__all__ = ["SWEEP_PEERS", "sweep_columns", "sweep_markdown", "sweep_rows"]
