"""Magnitude pruning, to make sparse models to test and demonstrate the runtime with.

This is the simplest pruning there is (no retraining), meant for demos and
benchmarks; real sparse checkpoints come from a pruning-aware training run.

It wrecks quality: on all-MiniLM-L6-v2, the mean cosine of the pruned model's
sentence embeddings to the unpruned ones (16 sentences, measured with this module)
is 0.93 at 30% sparsity, 0.75 at 50%, 0.44 at 70% and 0.24 at 90% (block=1), and
0.70, 0.42, 0.25, 0.21 in 4-blocks (block=4). Use it to measure speed, not answers.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .errors import UnsupportedModelError
from .extras import require

BLOCK_SIZES = (1, 4)


def _check_sparsity(sparsity: Any) -> float:
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float, np.floating, np.integer)):
        raise TypeError(f"sparsity must be a number in [0, 1], got {sparsity!r}")
    if not 0.0 <= float(sparsity) <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
    return float(sparsity)


def _smallest(scores: np.ndarray, count: int) -> np.ndarray:
    """Flat indices of the ``count`` smallest scores (ties broken arbitrarily)."""
    if count <= 0:
        return np.empty(0, dtype=np.intp)
    if count >= scores.size:
        return np.arange(scores.size)
    return np.argpartition(scores, count - 1)[:count]


def magnitude_prune(weight: Any, sparsity: float, block: int = 1) -> np.ndarray:
    """A copy of ``weight`` with its smallest-magnitude weights (or 4-blocks) set to zero.

    block=1: the round(sparsity * size) smallest |w| become zero.
    block=4: aligned 4-blocks along the last (input) axis are ranked by L2 norm and the
    round(sparsity * number_of_blocks) weakest are zeroed; when the input dim is not a
    multiple of 4 the last block of each row is shorter and simply has fewer weights
    in its norm.  Blocks never span rows, matching the block4 packed layout.
    """
    sparsity = _check_sparsity(sparsity)
    if block not in BLOCK_SIZES:
        raise ValueError(f"block must be one of {BLOCK_SIZES}, got {block!r}")
    weight = np.asarray(weight)
    if weight.ndim < 1 or weight.dtype.kind not in "fiu":
        raise ValueError(f"weight must be a real array with at least one axis, got {weight.dtype}{weight.shape}")
    if not np.isfinite(weight).all():
        raise ValueError("weight contains NaN or infinite values")
    pruned = np.array(weight, copy=True, order="C")
    if block == 1:
        scores = np.abs(pruned, dtype=np.float64).reshape(-1)
        pruned.reshape(-1)[_smallest(scores, round(sparsity * scores.size))] = 0
        return pruned

    n_cols = weight.shape[-1]
    n_blocks = math.ceil(n_cols / block)
    padded = np.zeros((*weight.shape[:-1], n_blocks * block), dtype=np.float64)
    padded[..., :n_cols] = weight
    norms = np.sqrt(np.square(padded).reshape(-1, block).sum(axis=1))
    chosen = np.zeros(norms.size, dtype=bool)
    chosen[_smallest(norms, round(sparsity * norms.size))] = True
    mask = np.repeat(chosen, block).reshape(padded.shape)[..., :n_cols]
    pruned[mask] = 0
    return pruned


# The six Linear modules of a BERT layer, as attribute paths from a BertLayer.
BERT_LAYER_LINEARS = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
)


DISTILBERT_LAYER_LINEARS = ("attention.q_lin", "attention.k_lin", "attention.v_lin", "attention.out_lin",
                            "ffn.lin1", "ffn.lin2")


def _encoder_layers(model: Any) -> tuple[Any, tuple[str, ...]]:
    """The encoder's layers and the names of their linears: BERT and RoBERTa (encoder.layer) or DistilBERT
    (transformer.layer)."""
    base = getattr(model, "base_model", model)  # the task models wrap the bare encoder
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if layers is not None:
        return layers, BERT_LAYER_LINEARS
    layers = getattr(getattr(base, "transformer", None), "layer", None)
    if layers is not None:
        return layers, DISTILBERT_LAYER_LINEARS
    raise UnsupportedModelError(
        f"{type(model).__name__} has no encoder.layer or transformer.layer list; prune_bert_ expects a "
        "transformers BERT, RoBERTa or DistilBERT model"
    )


def _submodule(layer: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        layer = getattr(layer, part)
    return layer


def prune_bert_(model: Any, sparsity: float, block: int = 1) -> Any:
    """Magnitude-prune, in place, every encoder linear of a transformers BERT, RoBERTa or DistilBERT model;
    returns the model.

    Without retraining this wrecks quality (all-MiniLM-L6-v2's sentence embeddings keep a cosine of 0.93 to the
    unpruned ones at 30%, 0.75 at 50%, 0.44 at 70%, 0.24 at 90%: see the module's docstring): good for measuring
    speed, not for answers.

    Embeddings, the pooler and task heads are left dense: they are small or, for the
    word embeddings, a lookup rather than a matmul.
    """
    torch = require("torch", "prune_bert_")  # only callers that already hold a torch model pay for importing it

    _check_sparsity(sparsity)
    layers, linears = _encoder_layers(model)
    with torch.no_grad():
        for layer in layers:
            for dotted in linears:
                param = _submodule(layer, dotted).weight
                dense = param.detach().to("cpu", torch.float32).numpy()
                pruned = magnitude_prune(dense, sparsity, block)
                param.copy_(torch.from_numpy(pruned).to(param.device, param.dtype))
    return model


__all__ = ["magnitude_prune", "prune_bert_"]
