"""PNG plots of benchmark results (matplotlib, Agg backend: no display needed, nothing opens a window)."""

from __future__ import annotations

import os
from typing import Any

from .runners import LABELS

COLORS = {"sparsebert": "#d62728", "onnxruntime": "#1f77b4", "pytorch": "#ff7f0e", "deepsparse": "#2ca02c",
          "sparsebert_fp32": "#9467bd", "onnxruntime_int8": "#17becf"}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # before pyplot is imported; a headless server has no display
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | os.PathLike) -> None:
    fig.tight_layout()
    fig.savefig(os.fspath(path), dpi=120)
    _pyplot().close(fig)


def engine_plot(result: dict[str, Any], path: str | os.PathLike) -> None:
    """Horizontal bars of median latency per engine, whiskers from p10 to p90."""
    plt = _pyplot()
    names = list(result["engines"])
    rows = [result["engines"][n] for n in names]
    fig, ax = plt.subplots(figsize=(9, 1.4 + 0.6 * len(names)))
    y = range(len(names))
    med = [r["median_ms"] for r in rows]
    err = [[m - r["p10_ms"] for m, r in zip(med, rows)], [r["p90_ms"] - m for m, r in zip(med, rows)]]
    ax.barh(y, med, xerr=err, color=[COLORS.get(n, "grey") for n in names], capsize=3)
    ax.set_yticks(list(y), [r["label"] for r in rows])
    ax.invert_yaxis()
    for i, (r, n) in enumerate(zip(rows, names)):
        ratio = "" if n == "sparsebert" else f"  (sparsebert / this: {result['ratios'][n]:.2f}×)"
        ax.text(r["p90_ms"], i, f"  {r['median_ms']:.1f} ms{ratio}", va="center", fontsize=8)
    ax.set_xlabel("median latency, ms (whiskers p10–p90; lower is better)")
    ax.set_xlim(0, max(r["p90_ms"] for r in rows) * 1.6)
    ax.set_title(_title(result["model"]["description"], result), fontsize=8)
    _save(fig, path)


def _title(first: str, result: dict[str, Any]) -> str:
    env = result["environment"]
    batches = ", ".join(map(str, result.get("batches") or [result["batch"]]))
    mode = f", {result['mode']} timing" if "mode" in result else ""
    return (f"{first}, batch {batches} × seq {result['seq']}, {result['threads']} threads, "
            f"isa {env['isa']}{mode}\n{env['cpu']}, commit {env['commit'] or 'n/a'}, {env['date'][:10]}")


def sweep_plot(result: dict[str, Any], path: str | os.PathLike) -> None:
    """Latency against sparsity per engine (left) and sparsebert's ratio to each peer (right)."""
    plt = _pyplot()
    # One line per engine, and per precision and batch size when the sweep has several.
    groups: dict[tuple[str, Any], list[dict[str, Any]]] = {}
    for p in result["points"]:
        groups.setdefault((p.get("precision", "fp32"), p.get("batch", result["batch"])), []).append(p)
    fig, (lat, rat) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = ("o-", "s--", "^:", "d-.")
    for g, ((precision, batch), points) in enumerate(groups.items()):
        suffix = f" ({precision}, batch {batch})" if len(groups) > 1 else ""
        x = [100 * p["sparsity"] for p in points]
        for name in result["engines_run"]:
            have = [(xi, p["engines"][name]) for xi, p in zip(x, points) if name in p["engines"]]
            if not have:
                continue
            xs, rows = zip(*have)
            label = LABELS.get(name, name) + suffix
            style = styles[g % len(styles)]
            lat.plot(xs, [r["median_ms"] for r in rows], style, color=COLORS.get(name), label=label)
            lat.fill_between(xs, [r["p10_ms"] for r in rows], [r["p90_ms"] for r in rows], color=COLORS.get(name),
                             alpha=0.15, linewidth=0)
            if name != "sparsebert":
                ratios = [(xi, p["ratios"][name]) for xi, p in zip(x, points) if name in p["ratios"]]
                rat.plot(*zip(*ratios), style, color=COLORS.get(name), label=f"sparsebert / {label}")
    lat.set_xlabel("sparsity of the encoder's linear layers, %")
    lat.set_ylabel("median latency, ms (band p10–p90)")
    lat.set_ylim(bottom=0)
    lat.legend(fontsize=8)
    lat.grid(alpha=0.3)
    rat.axhline(1.0, color="grey", linewidth=0.8)
    rat.set_xlabel("sparsity of the encoder's linear layers, %")
    rat.set_ylabel("latency ratio (below 1: sparsebert faster)")
    rat.set_ylim(bottom=0)
    rat.legend(fontsize=8)
    rat.grid(alpha=0.3)
    pruning = "4-block" if result["block"] == 4 else "unstructured"
    fig.suptitle(_title(f"{result['model_name']}, {pruning} pruning", result), fontsize=9)
    _save(fig, path)


def kernel_plot(result: dict[str, Any], path: str | os.PathLike) -> None:
    """Real GFLOP/s per shape and layout, one panel per (tokens, threads), with the FMA peak as a line."""
    plt = _pyplot()
    rows = result["rows"]
    cells = sorted({(r["tokens"], r["threads"]) for r in rows})
    shapes = list(dict.fromkeys((r["n"], r["k"]) for r in rows))
    layouts = list(dict.fromkeys(r["layout_label"] for r in rows))
    peak = next(iter(result["fma_peak_gflops"].values()))
    fig, axes = plt.subplots(1, len(cells), figsize=(4.5 * len(cells), 4), squeeze=False, sharey=True)
    width = 0.8 / len(layouts)
    for ax, (tokens, threads) in zip(axes[0], cells):
        for j, lay in enumerate(layouts):
            values = [next((r["real_gflops"] for r in rows if (r["n"], r["k"]) == s and r["tokens"] == tokens and
                            r["threads"] == threads and r["layout_label"] == lay), 0.0) for s in shapes]
            ax.bar([i + j * width for i in range(len(shapes))], values, width, label=lay)
        ax.axhline(peak * threads, color="black", linestyle="--", linewidth=0.8, label="FMA peak")
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(shapes))], [f"{n}×{k}" for n, k in shapes],
                      fontsize=7)
        ax.set_title(f"{tokens} tokens, {threads} thread{'s' if threads > 1 else ''}", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("real GFLOP/s (2·T·nnz / time)")
    axes[0][0].legend(fontsize=7)
    env = result["environment"]
    fig.suptitle(f"sparse GEMM kernels, fp32, isa {result['isa']}\n{env['cpu']}, commit {env['commit'] or 'n/a'}, "
                 f"{env['date'][:10]}", fontsize=9)
    _save(fig, path)


__all__ = ["engine_plot", "kernel_plot", "sweep_plot"]
