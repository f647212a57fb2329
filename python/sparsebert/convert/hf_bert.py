"""Map BERT and RoBERTa checkpoints (checkpoint.py) onto the encoder tensors of ARCHITECTURE.md.

RoBERTa's encoder names its weights exactly as BERT's; only the heads differ. Everything that does not fit is
collected and reported in one UnsupportedModelError, so a user fixes a checkpoint in one round trip.
"""

from __future__ import annotations

from typing import Any, Union

import numpy as np

from .._native import core
from ..errors import UnsupportedModelError
from . import masked_lm
from .checkpoint import Checkpoint
from .hf_names import LAYER_NAMES


class Collector:
    """Takes weights by HF name, checking shapes, and remembers every problem for one report."""

    def __init__(self, ckpt: Checkpoint):
        self.ckpt = ckpt
        self.missing: list[str] = []
        self.wrong: list[str] = []
        self.nonfinite: list[str] = []

    def shown(self, name: str, encoder: bool) -> str:
        # Name weights the way the source does, so users can grep for them.
        return (self.ckpt.prefix if encoder else "") + name

    def take(self, name: str, shape: tuple[int, ...], encoder: bool = True) -> np.ndarray | None:
        value = self.ckpt.weights.get(name)
        if value is None:
            self.missing.append(self.shown(name, encoder))
            return None
        if tuple(value.shape) != shape:
            self.wrong.append(f"{self.shown(name, encoder)} is {list(value.shape)}, expected {list(shape)}")
            return None
        value = np.ascontiguousarray(value, dtype=np.float32)
        if not np.isfinite(value).all():
            self.nonfinite.append(self.shown(name, encoder))
        return value

    def linear(self, prefix: str, n_out: int, n_in: int, encoder: bool = True):
        weight = self.take(f"{prefix}.weight", (n_out, n_in), encoder)
        bias = self.take(f"{prefix}.bias", (n_out,), encoder)
        return weight, bias

    def raise_if_any(self) -> None:
        parts = []
        if self.missing:
            parts.append(f"missing {len(self.missing)} weight(s): {', '.join(self.missing)}")
        if self.wrong:
            parts.append("wrong shapes: " + "; ".join(self.wrong))
        if self.nonfinite:
            parts.append("NaN/inf values in: " + ", ".join(self.nonfinite))
        if parts:
            raise UnsupportedModelError(f"cannot export {self.ckpt.source}: " + "; ".join(parts))


Item = Union[np.ndarray, tuple[np.ndarray, np.ndarray]]


def encoder_tensors(ckpt: Checkpoint, config: dict[str, Any]) -> dict[str, Item]:
    """Encoder tensors in file order: name -> array, or -> (weight [N, K], bias [N]) for a linear."""
    return collect_tensors(ckpt, config, head_tensors)


def collect_tensors(ckpt: Checkpoint, config: dict[str, Any], heads, token_types: bool = True) -> dict[str, Item]:
    """Embeddings, layers and ``heads(take, config, h)``, read with one Collector so that every missing weight is
    reported at once. ``token_types=False`` (DistilBERT, hf_distilbert.py): one all-zero type row, which every
    (all-zero) token_type_ids selects."""
    h, n_inter = config["hidden_size"], config["intermediate_size"]
    take = Collector(ckpt)
    types_shape = (config["type_vocab_size"], h)
    items: dict[str, Any] = {
        "embeddings.word_embeddings": take.take("embeddings.word_embeddings.weight", (config["vocab_size"], h)),
        "embeddings.position_embeddings": take.take(
            "embeddings.position_embeddings.weight", (config["max_position_embeddings"], h)),
        "embeddings.token_type_embeddings": take.take("embeddings.token_type_embeddings.weight", types_shape)
        if token_types else np.zeros(types_shape, np.float32),
        "embeddings.layer_norm.weight": take.take("embeddings.LayerNorm.weight", (h,)),
        "embeddings.layer_norm.bias": take.take("embeddings.LayerNorm.bias", (h,)),
    }
    for i in range(config["num_hidden_layers"]):
        items.update(layer_tensors(take, ckpt.family, i, h, n_inter))
    items.update(heads(take, config, h))
    take.raise_if_any()
    return items


def layer_tensors(take: Collector, family: str, i: int, h: int, n_inter: int) -> dict[str, Item]:
    """Layer i's canonical tensors, read under the family's names (hf_names.py)."""
    names = {key: tuple(n.format(i=i) for n in v) if isinstance(v, tuple) else v.format(i=i)
             for key, v in LAYER_NAMES[family].items()}
    ours = f"layers.{i}"
    qkv = [take.linear(part, h, h) for part in names["qkv"]]
    items: dict[str, Item] = {
        # One [3H, H] matmul instead of three: rows are Q, then K, then V.
        f"{ours}.attention.qkv": (np.concatenate([w for w, _ in qkv]), np.concatenate([b for _, b in qkv]))
        if all(w is not None and b is not None for w, b in qkv) else None,
        f"{ours}.attention.output": take.linear(names["attention.output"], h, h),
        f"{ours}.attention.layer_norm.weight": take.take(f"{names['attention.layer_norm']}.weight", (h,)),
        f"{ours}.attention.layer_norm.bias": take.take(f"{names['attention.layer_norm']}.bias", (h,)),
        f"{ours}.ffn.up": take.linear(names["ffn.up"], n_inter, h),
        f"{ours}.ffn.down": take.linear(names["ffn.down"], h, n_inter),
        f"{ours}.ffn.layer_norm.weight": take.take(f"{names['ffn.layer_norm']}.weight", (h,)),
        f"{ours}.ffn.layer_norm.bias": take.take(f"{names['ffn.layer_norm']}.bias", (h,)),
    }
    return items


def head_tensors(take: Collector, config: dict[str, Any], h: int) -> dict[str, Item]:
    """The pooler and task head of a BERT or RoBERTa model."""
    items: dict[str, Item] = {}
    labels = config["num_labels"]
    if config["head"] == "sequence_classification" and config.get("pooler_is_head"):
        # RobertaClassificationHead: dense + tanh on the first token, then out_proj.
        items["pooler"] = take.linear("classifier.dense", h, h, encoder=False)
        items["classifier"] = take.linear("classifier.out_proj", labels, h, encoder=False)
        return items
    if config["has_pooler"]:
        items["pooler"] = take.linear("pooler.dense", h, h)
    if config["head"] in ("sequence_classification", "token_classification"):
        items["classifier"] = take.linear("classifier", labels, h, encoder=False)
    elif config["head"] == "question_answering":
        items["qa_outputs"] = take.linear("qa_outputs", core().QA_OUTPUTS, h, encoder=False)
    elif config["head"] == masked_lm.MASKED_LM:
        items.update(masked_lm.head_tensors(take, config, h, take.ckpt.family))
    return items
