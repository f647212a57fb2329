"""Structured compaction: drop attention heads and FFN neurons that cannot change a layer's output.

Block pruning (nn_pruning) zeroes whole heads and FFN neurons. A head whose columns of the attention output
projection are all zero adds nothing; one whose value rows are zero adds a constant (its attention weights sum
to 1 over the value bias), which goes into the output bias. Likewise an FFN neuron whose down-projection column is
zero adds nothing, and one whose up-projection row is zero adds act(its up bias) times its down column, again a
constant for the down bias. Such heads and neurons are removed from the packed matrices; the encoder config
records how many each layer kept (`layer_heads`, `layer_intermediate`). Every layer keeps at least one head and
one neuron (a layer with none would need a zero-width matrix), so a fully pruned layer costs one zero head.

Removing columns shifts the ones after them, which would break the 4-blocks of a matrix packed as block4 (its
blocks run along the input dimension). For such an output projection heads go only when the head size is a
multiple of 4; for such an FFN down projection neurons go in aligned groups of 4 whose members are all removable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from collections.abc import Collection
from typing import Any

import numpy as np

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
# The linears whose input columns compaction removes, which a 4-block packing constrains (see the module doc).
NARROWED = ("attention.output", "ffn.down")


def _activation(name: str, x: float) -> float:
    """The FFN activation of one float, as transformers computes it (in float64)."""
    if name == "gelu":
        return 0.5 * x * (1.0 + math.erf(x / math.sqrt(2.0)))
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return 0.5 * x * (1.0 + math.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x**3)))
    if name == "relu":
        return max(x, 0.0)
    raise ValueError(f"no constant folding for activation {name!r}")


@dataclass
class LayerCompaction:
    layer: int
    heads_kept: int
    heads_total: int
    neurons_kept: int
    neurons_total: int

    @property
    def heads_removed(self) -> int:
        return self.heads_total - self.heads_kept

    @property
    def neurons_removed(self) -> int:
        return self.neurons_total - self.neurons_kept


def _keep_at_least_one(keep: np.ndarray) -> np.ndarray:
    if not keep.any():
        keep = keep.copy()
        keep[0] = True
    return keep


def _whole_quads(removable: np.ndarray) -> np.ndarray:
    """Removable only where all 4 members of an aligned group are (a last, partial group counts its members)."""
    quads = np.ones(-(-len(removable) // 4) * 4, dtype=bool)
    quads[: len(removable)] = removable
    return np.repeat(quads.reshape(-1, 4).all(axis=1), 4)[: len(removable)]


def compact(items: dict[str, Any], config: dict[str, Any], block4_linears: Collection[str] = (),
            row_scales: dict[str, np.ndarray] | None = None) -> list[LayerCompaction]:
    """Compacts the mapped encoder tensors in place (see the module doc); returns what each layer kept and adds
    `layer_heads` / `layer_intermediate` to ``config`` when anything was removed. ``block4_linears`` names the
    NARROWED linears (``layers.{i}.attention.output``, ``layers.{i}.ffn.down``) the exporter packs in a 4-block
    layout. Linears whose weights were missing (None: the mapper reports them) are left alone. ``row_scales`` (a
    quantized checkpoint's per-row scales by linear name, qat.py) lose the rows their linears lose."""
    h, heads = config["hidden_size"], config["num_attention_heads"]
    dh = h // heads
    act = config["hidden_act"]
    result = []
    for i in range(config["num_hidden_layers"]):
        p = f"layers.{i}"
        qkv, out, up, down = (items.get(f"{p}.{n}") for n in ("attention.qkv", "attention.output", "ffn.up",
                                                               "ffn.down"))
        if any(x is None for x in (qkv, out, up, down)):
            return []
        (w_qkv, b_qkv), (w_out, b_out), (w_up, b_up), (w_down, b_down) = qkv, out, up, down
        b_out, b_down = b_out.astype(np.float64), b_down.astype(np.float64)

        out_cols = w_out.reshape(h, heads, dh)
        silent = ~out_cols.any(axis=(0, 2))  # adds nothing
        v_rows = w_qkv[2 * h:].reshape(heads, dh, h)
        constant = ~silent & ~v_rows.any(axis=(1, 2))  # adds W_o[:, head] @ b_v[head]
        removable = silent | constant
        if dh % 4 and f"{p}.attention.output" in block4_linears:
            removable[:] = False
        keep_heads = _keep_at_least_one(~removable)
        for j in np.flatnonzero(constant & ~keep_heads):
            cols = slice(j * dh, (j + 1) * dh)
            b_out += w_out[:, cols].astype(np.float64) @ b_qkv[2 * h:][cols].astype(np.float64)

        silent_n = ~w_down.any(axis=0)
        constant_n = ~silent_n & ~w_up.any(axis=1)
        removable_n = silent_n | constant_n
        if f"{p}.ffn.down" in block4_linears:
            removable_n = _whole_quads(removable_n)
        keep_n = _keep_at_least_one(~removable_n)
        for n in np.flatnonzero(constant_n & ~keep_n):
            b_down += w_down[:, n].astype(np.float64) * _activation(act, float(b_up[n]))

        head_rows = np.repeat(keep_heads, dh)
        qkv_rows = np.tile(head_rows, 3)
        items[f"{p}.attention.qkv"] = (np.ascontiguousarray(w_qkv[qkv_rows]), np.ascontiguousarray(b_qkv[qkv_rows]))
        items[f"{p}.attention.output"] = (np.ascontiguousarray(w_out[:, head_rows]), b_out.astype(np.float32))
        items[f"{p}.ffn.up"] = (np.ascontiguousarray(w_up[keep_n]), np.ascontiguousarray(b_up[keep_n]))
        items[f"{p}.ffn.down"] = (np.ascontiguousarray(w_down[:, keep_n]), b_down.astype(np.float32))
        for name, rows in ((f"{p}.attention.qkv", qkv_rows), (f"{p}.ffn.up", keep_n)):
            if row_scales and name in row_scales:
                row_scales[name] = row_scales[name][rows]
        result.append(LayerCompaction(i, int(keep_heads.sum()), heads, int(keep_n.sum()), len(keep_n)))
    if any(r.heads_removed or r.neurons_removed for r in result):
        config["layer_heads"] = [r.heads_kept for r in result]
        config["layer_intermediate"] = [r.neurons_kept for r in result]
    return result
