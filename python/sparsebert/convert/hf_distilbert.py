"""Map DistilBERT checkpoints (checkpoint.py) onto the encoder tensors of ARCHITECTURE.md.

DistilBERT is BERT without token types or a pooler, under its own weight names: q_lin/k_lin/v_lin/out_lin,
sa_layer_norm, ffn.lin1/lin2, output_layer_norm. Its sequence classifier (pre_classifier + ReLU, classifier)
runs as the encoder's pooler and classifier (hf_config.py).
"""

from __future__ import annotations

from typing import Any

from .._native import core
from . import masked_lm
from .hf_bert import Collector, Item, collect_tensors
from .checkpoint import Checkpoint


def encoder_tensors(ckpt: Checkpoint, config: dict[str, Any]) -> dict[str, Item]:
    """Encoder tensors in file order: name -> array, or -> (weight [N, K], bias [N]) for a linear."""
    return collect_tensors(ckpt, config, head_tensors, token_types=False)


def head_tensors(take: Collector, config: dict[str, Any], h: int) -> dict[str, Item]:
    """DistilBERT's task heads: its sequence classifier's pre_classifier runs as the pooler."""
    items: dict[str, Item] = {}
    labels = config["num_labels"]
    if config["head"] == "sequence_classification":
        items["pooler"] = take.linear("pre_classifier", h, h, encoder=False)
        items["classifier"] = take.linear("classifier", labels, h, encoder=False)
    elif config["head"] == "token_classification":
        items["classifier"] = take.linear("classifier", labels, h, encoder=False)
    elif config["head"] == "question_answering":
        items["qa_outputs"] = take.linear("qa_outputs", core().QA_OUTPUTS, h, encoder=False)
    elif config["head"] == masked_lm.MASKED_LM:
        items.update(masked_lm.head_tensors(take, config, h, "distilbert"))
    return items
