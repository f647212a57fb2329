"""FLOP counts of one encoder run, to turn latencies into GFLOP/s.

Two counts, as sparse-kernel papers report them:

* dense-equivalent: what a dense runtime computes, ``2 * M * N * K`` per linear layer;
* real (useful): only the multiply-adds with a non-zero weight, ``2 * M * nnz`` with nnz the layer's true
  nonzeros (``(1 - sparsity) * N * K``, not the zeros a 4-block layout stores).

Both add the attention matmuls, which are dense in every engine: per layer ``Q K^T`` and ``P V`` are each
``2 * B * S^2 * H`` (``4 * B * S^2 * H`` together).  Softmax, LayerNorm, GELU and embeddings are left out:
they are a few percent of the work and not multiply-adds.  M is the token count ``B * S`` for per-token
layers and ``B`` for the pooler and classifier, which see one vector per sequence.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

# Linears that run on the [CLS] vector of each sequence only.
PER_SEQUENCE = ("pooler", "classifier")  # "classifier" of token classification runs on every token (see below)


def rows_of(name: str, batch: int, seq: int, head: str = "sequence_classification") -> int:
    """M of a linear: how many vectors it multiplies in a [batch, seq] run."""
    per_sequence = name in PER_SEQUENCE and not (name == "classifier" and head == "token_classification")
    return batch if per_sequence else batch * seq


def attention_flops(config: Mapping[str, Any], batch: int, seq: int) -> int:
    """FLOPs of the attention score and context matmuls over all layers: ``4 * B * S^2 * width`` per layer, the
    width being the layer's kept heads times the head size (all of H unless structured compaction removed
    heads)."""
    head_dim = config["hidden_size"] // config["num_attention_heads"]
    heads = config.get("layer_heads") or [config["num_attention_heads"]] * config["num_hidden_layers"]
    return 4 * batch * seq * seq * head_dim * sum(heads)


def encoder_flops(config: Mapping[str, Any], linears: Iterable[Mapping[str, Any]], batch: int,
                  seq: int) -> dict[str, float]:
    """Dense-equivalent and real FLOPs of one run (``linears``: rows with name, shape and nnz, as in a file's
    header or ``SparseEngine.linears``).  Returns counts in FLOP, and GFLOP for convenience."""
    dense = real = 0
    for row in linears:
        n, k = row["shape"]
        m = rows_of(row["name"], batch, seq, config.get("head", "none"))
        dense += 2 * m * n * k
        real += 2 * m * int(row["nnz"])
    attention = attention_flops(config, batch, seq)
    return {
        "linear_dense_flop": dense,
        "linear_real_flop": real,
        "attention_flop": attention,
        "dense_flop": dense + attention,
        "real_flop": real + attention,
        "dense_gflop": (dense + attention) / 1e9,
        "real_gflop": (real + attention) / 1e9,
    }


def gflops(flop: float, ms: float) -> float:
    """GFLOP/s of ``flop`` done in ``ms`` milliseconds."""
    return flop / (ms * 1e-3) / 1e9 if ms > 0 else float("nan")


__all__ = ["PER_SEQUENCE", "attention_flops", "encoder_flops", "gflops", "rows_of"]
