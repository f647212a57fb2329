"""Masked-LM checkpoints (BertForMaskedLM, BertForPreTraining, RobertaForMaskedLM, DistilBertForMaskedLM): which
head an export keeps, and the head's weights under the file's names (``mlm.*``, ARCHITECTURE.md).

By default they export as their bare encoder (as ``BertModel`` would: BertForPreTraining keeps its pooler,
BertForMaskedLM has none); ``head="masked_lm"`` keeps the masked-LM head instead. The decoder is tied to the word
embeddings in these checkpoints, so the file stores only its bias (``mlm_decoder`` ``tied``); a checkpoint that
unties them (``tie_word_embeddings`` false) with a decoder that really differs stores it as the linear
``mlm.decoder``. BertForPreTraining's next-sentence head (``cls.seq_relationship``) is never exported, nor the
pooler that only feeds it when the masked-LM head is kept.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .checkpoint import Checkpoint

MASKED_LM = "masked_lm"
HEAD_CHOICES = (None, "none", MASKED_LM)  # export()'s head=: None keeps a task model's head (not a masked-LM one)

# Per family: how the head is named in messages, the transform's dense and LayerNorm, the decoder's weight, and
# the names its bias goes by (the head's, then the decoder's own: tied by transformers unless untied).
HEAD_NAMES: dict[str, dict[str, Any]] = {
    "bert": {"shown": "cls.predictions.*", "dense": "cls.predictions.transform.dense",
             "layer_norm": "cls.predictions.transform.LayerNorm", "decoder": "cls.predictions.decoder.weight",
             "bias": ("cls.predictions.bias", "cls.predictions.decoder.bias")},
    "roberta": {"shown": "lm_head.*", "dense": "lm_head.dense", "layer_norm": "lm_head.layer_norm",
                "decoder": "lm_head.decoder.weight", "bias": ("lm_head.bias", "lm_head.decoder.bias")},
    "distilbert": {"shown": "vocab_transform, vocab_layer_norm, vocab_projector", "dense": "vocab_transform",
                   "layer_norm": "vocab_layer_norm", "decoder": "vocab_projector.weight",
                   "bias": ("vocab_projector.bias",)},
}
NEXT_SENTENCE = "cls.seq_relationship"  # BertForPreTraining's next-sentence head


def check_head(head: Any) -> None:
    """export()'s ``head=`` argument, checked before anything is read."""
    if head not in HEAD_CHOICES:
        raise ValueError(f"head must be None, 'none' or 'masked_lm', got {head!r}")


def export_head(ckpt: Checkpoint, head: str | None) -> str:
    """The head an export writes: ``head`` when given ("none": the bare encoder; "masked_lm", which only a
    masked-LM checkpoint has), else the checkpoint's task head, except a masked-LM head (the bare encoder)."""
    check_head(head)
    if head == MASKED_LM and ckpt.head != MASKED_LM:
        raise ValueError(f"head='masked_lm' needs a masked-LM checkpoint; {ckpt.source} is a {ckpt.architecture}")
    if head is None:
        return "none" if ckpt.head == MASKED_LM else ckpt.head
    return head


def config_keys(ckpt: Checkpoint, hf: dict[str, Any]) -> dict[str, Any]:
    """The encoder config keys of a kept masked-LM head (``hf``: the normalized transformers config)."""
    # RobertaLMHead applies gelu whatever hidden_act says; BERT's and DistilBERT's heads apply hidden_act.
    act = "gelu" if ckpt.family == "roberta" else hf["hidden_act"]
    return {"num_labels": 0, "has_pooler": False, "mlm_act": act,
            "mlm_decoder": "tied" if decoder_is_tied(ckpt, hf) else "separate"}


def decoder_is_tied(ckpt: Checkpoint, hf: dict[str, Any]) -> bool:
    """Whether the decoder computes with the word embeddings: transformers ties them unless the config says
    ``tie_word_embeddings: false``, and an untied decoder equal to them is stored once all the same."""
    if hf.get("tie_word_embeddings", True):
        return True
    decoder = ckpt.weights.get(HEAD_NAMES[ckpt.family]["decoder"])
    embeddings = ckpt.weights.get("embeddings.word_embeddings.weight")
    return decoder is not None and embeddings is not None and np.array_equal(decoder, embeddings)


def head_tensors(take: Any, config: dict[str, Any], h: int, family: str) -> dict[str, Any]:
    """The kept head's tensors, read with the mapper's Collector (hf_bert.py), which reports what is missing."""
    names = HEAD_NAMES[family]
    vocab = config["vocab_size"]
    # Tied, the decoder's bias is the head's bias (transformers ties decoder.bias to it); untied, the decoder
    # computes with its own.
    order = names["bias"] if config["mlm_decoder"] == "tied" else names["bias"][::-1]
    bias_name = next((n for n in order if n in take.ckpt.weights), order[0])
    bias = take.take(bias_name, (vocab,), encoder=False)
    items: dict[str, Any] = {
        "mlm.transform": take.linear(names["dense"], h, h, encoder=False),
        "mlm.layer_norm.weight": take.take(f"{names['layer_norm']}.weight", (h,), encoder=False),
        "mlm.layer_norm.bias": take.take(f"{names['layer_norm']}.bias", (h,), encoder=False),
    }
    if config["mlm_decoder"] == "tied":
        items["mlm.decoder_bias"] = bias
    else:
        weight = take.take(names["decoder"], (vocab, h), encoder=False)
        items["mlm.decoder"] = (weight, bias) if weight is not None and bias is not None else None
    return items


def describe_dropped(ckpt: Checkpoint, config: dict[str, Any]) -> str | None:
    """What of a masked-LM checkpoint the file leaves out, for the export report."""
    if ckpt.head != MASKED_LM:
        return None
    next_sentence = any(n.startswith(NEXT_SENTENCE + ".") for n in ckpt.weights)
    if config["head"] == MASKED_LM:
        if not next_sentence:
            return None
        return (f"not exported: the next-sentence head ({NEXT_SENTENCE}.*) and the pooler that only feeds it; the "
                "masked-LM head is kept")
    dropped = f"the masked-LM head ({HEAD_NAMES[ckpt.family]['shown']})"
    if next_sentence:
        dropped += f" and the next-sentence head ({NEXT_SENTENCE}.*)"
    return (f"not exported: {dropped}; the file is the bare encoder. export(..., head='masked_lm') "
            "(sparsebert export --head masked_lm) keeps the masked-LM head")
