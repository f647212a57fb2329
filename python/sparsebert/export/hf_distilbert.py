"""Map DistilBERT checkpoints (hf_checkpoint.py) onto the encoder tensors of ARCHITECTURE.md.

DistilBERT is BERT without token types or a pooler, under its own weight names: q_lin/k_lin/v_lin/out_lin,
sa_layer_norm, ffn.lin1/lin2, output_layer_norm. Its sequence classifier (pre_classifier + ReLU, classifier)
runs as the encoder's pooler and classifier (hf_config.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..format import spec
from .hf_bert import Collector, Item, layer_tensors
from .hf_checkpoint import Checkpoint


def encoder_tensors(ckpt: Checkpoint, config: dict[str, Any]) -> dict[str, Item]:
    """Encoder tensors in file order: name -> array, or -> (weight [N, K], bias [N]) for a linear."""
    h, n_inter = config["hidden_size"], config["intermediate_size"]
    take = Collector(ckpt)
    items: dict[str, Any] = {
        "embeddings.word_embeddings": take.take("embeddings.word_embeddings.weight", (config["vocab_size"], h)),
        "embeddings.position_embeddings": take.take(
            "embeddings.position_embeddings.weight", (config["max_position_embeddings"], h)),
        # No token types: one all-zero type row, which every (all-zero) token_type_ids selects.
        "embeddings.token_type_embeddings": np.zeros((config["type_vocab_size"], h), np.float32),
        "embeddings.layer_norm.weight": take.take("embeddings.LayerNorm.weight", (h,)),
        "embeddings.layer_norm.bias": take.take("embeddings.LayerNorm.bias", (h,)),
    }
    for i in range(config["num_hidden_layers"]):
        items.update(layer_tensors(take, "distilbert", i, h, n_inter))
    labels = config["num_labels"]
    if config["head"] == "sequence_classification":
        items["pooler"] = take.linear("pre_classifier", h, h, encoder=False)
        items["classifier"] = take.linear("classifier", labels, h, encoder=False)
    elif config["head"] == "token_classification":
        items["classifier"] = take.linear("classifier", labels, h, encoder=False)
    elif config["head"] == "question_answering":
        items["qa_outputs"] = take.linear("qa_outputs", spec.QA_OUTPUTS, h, encoder=False)
    take.raise_if_any()
    return items
