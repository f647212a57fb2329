"""A transformers config (BERT, RoBERTa or DistilBERT) -> the encoder config of ARCHITECTURE.md.

The three families share one encoder; what differs is spelled out in the encoder config: DistilBERT has no
token types (one all-zero type row stands in), RoBERTa numbers positions from past its padding id, and the
sequence classifiers of RoBERTa (dense + tanh) and DistilBERT (pre_classifier + ReLU) run as the encoder's
pooler with `pooler_is_head`, since the transformers models do not return it.
"""

from __future__ import annotations

from typing import Any

from .._native import core
from ..errors import UnsupportedModelError
from ..format import spec
from ..spelling import option
from . import masked_lm
from .checkpoint import FAMILIES, Checkpoint

# The config classes' defaults: a config.json only lists what differs from them.
BERT_DEFAULTS: dict[str, Any] = {
    "vocab_size": 30522,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
    "position_embedding_type": "absolute",
    "is_decoder": False,
    "add_cross_attention": False,
    "pad_token_id": 0,
}
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "bert": BERT_DEFAULTS,
    "roberta": {**BERT_DEFAULTS, "vocab_size": 50265, "pad_token_id": 1},
    "distilbert": {"vocab_size": 30522, "dim": 768, "n_layers": 6, "n_heads": 12, "hidden_dim": 3072,
                   "activation": "gelu", "max_position_embeddings": 512, "pad_token_id": 0},
}
# DistilBERT's names for BERT's config keys.
DISTILBERT_KEYS = {"dim": "hidden_size", "n_layers": "num_hidden_layers", "n_heads": "num_attention_heads",
                   "hidden_dim": "intermediate_size", "activation": "hidden_act"}
DISTILBERT_LAYER_NORM_EPS = 1e-12  # fixed in transformers' DistilBERT, not in its config

INT_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
            "max_position_embeddings", "type_vocab_size")
DEFAULT_NUM_LABELS = 2  # PretrainedConfig's default when a config names no labels


def family_of(config: dict[str, Any], source: str) -> str:
    family = config.get("model_type", "bert")  # very old BERT configs predate model_type
    if family not in FAMILIES:
        raise UnsupportedModelError(
            f"cannot export {source}: model_type is {family!r}; supported: {', '.join(FAMILIES)}"
        )
    return family


def normalized(config: dict[str, Any], family: str) -> dict[str, Any]:
    """The config with the family's defaults filled in, under BERT's key names."""
    hf = {**FAMILY_DEFAULTS[family], **{k: v for k, v in config.items() if v is not None}}
    if family == "distilbert":
        for theirs, ours in DISTILBERT_KEYS.items():
            hf[ours] = hf.pop(theirs)
        hf.update(type_vocab_size=1, layer_norm_eps=DISTILBERT_LAYER_NORM_EPS)
        hf.setdefault("position_embedding_type", "absolute")
    else:
        hf.setdefault("position_embedding_type", "absolute")
    return hf


def check_hf_config(config: dict[str, Any], family: str, source: str) -> None:
    """Refuse configs we cannot run, listing every reason; cheap, so it runs before weights are read."""
    hf = normalized(config, family)
    problems = []
    quantization = config.get("quantization_config")
    if quantization:
        method = quantization.get("quant_method") if isinstance(quantization, dict) else None
        problems.append(f"the checkpoint is quantized (quantization_config, quant_method {method!r}), and its "
                        "scales cannot be read; export the float checkpoint (QAT: its fake-quantized float weights) "
                        f"with {option('quantize_int8')}")
    if hf["position_embedding_type"] != "absolute":
        problems.append(f"position_embedding_type {hf['position_embedding_type']!r} is not supported (only 'absolute')")
    if hf.get("is_decoder"):
        problems.append("is_decoder is true; only encoders are supported")
    if hf.get("add_cross_attention"):
        problems.append("add_cross_attention is true; cross-attention is not supported")
    act = hf["hidden_act"]
    supported = core().CONFIG_CHOICES["hidden_act"]  # the engine's list, so nothing it cannot run gets exported
    if not isinstance(act, str) or act not in supported:
        problems.append(f"hidden_act {act!r} is not supported (supported: {', '.join(supported)})")
    for key in INT_KEYS:
        least, most = core().CONFIG_LIMITS[key]
        if not spec.is_int(hf[key]) or not max(least, 1) <= hf[key] <= most:
            problems.append(f"{key} must be an integer in [{max(least, 1)}, {most}], got {hf[key]!r}")
    eps = hf["layer_norm_eps"]
    if not spec.is_number(eps) or eps <= 0:
        problems.append(f"layer_norm_eps must be a positive number, got {eps!r}")
    if family == "roberta":
        pad = hf["pad_token_id"]
        if not spec.is_int(pad) or pad < 0 or (spec.is_int(hf["max_position_embeddings"])
                                               and pad + 1 >= hf["max_position_embeddings"]):
            problems.append(f"pad_token_id {pad!r} leaves no position ids below max_position_embeddings")
    if not problems and hf["hidden_size"] % hf["num_attention_heads"]:
        problems.append(f"hidden_size {hf['hidden_size']} is not a multiple of num_attention_heads "
                        f"{hf['num_attention_heads']}")
    if problems:
        raise UnsupportedModelError(f"cannot export {source}: " + "; ".join(problems))


def _labels(hf: dict[str, Any], source: str) -> tuple[int, dict[str, str]]:
    id2label = hf.get("id2label")
    labels = {str(k): str(v) for k, v in id2label.items()} if isinstance(id2label, dict) and id2label else None
    num_labels = len(labels) if labels else hf.get("num_labels", DEFAULT_NUM_LABELS)
    if not spec.is_int(num_labels) or num_labels < 1:
        raise UnsupportedModelError(f"cannot export {source}: num_labels {num_labels!r} is not a positive integer")
    return num_labels, labels or {str(i): f"LABEL_{i}" for i in range(num_labels)}


def encoder_config(ckpt: Checkpoint, head: str | None = None) -> dict[str, Any]:
    """The encoder config (ARCHITECTURE.md) for a checkpoint with the head ``head`` (masked_lm.export_head: by
    default a task model's own, a masked-LM model's bare encoder), or UnsupportedModelError listing every misfit."""
    check_hf_config(ckpt.hf_config, ckpt.family, ckpt.source)
    hf = normalized(ckpt.hf_config, ckpt.family)
    head = masked_lm.export_head(ckpt, head)
    config = {key: hf[key] for key in INT_KEYS}
    config.update(model_type=ckpt.family, layer_norm_eps=float(hf["layer_norm_eps"]), hidden_act=hf["hidden_act"],
                  head=head)
    if ckpt.family == "roberta":
        config.update(position_ids="padding_offset", pad_token_id=hf["pad_token_id"])
    if head in ("sequence_classification", "token_classification"):
        num_labels, labels = _labels(hf, ckpt.source)
        config.update(num_labels=num_labels, id2label=labels)
    elif head == "question_answering":
        config.update(num_labels=core().QA_OUTPUTS)
    elif head == masked_lm.MASKED_LM:
        config.update(masked_lm.config_keys(ckpt, hf))
    else:
        config.update(num_labels=0)
    if head == "sequence_classification":
        # BERT's pooler; RoBERTa's classifier.dense (tanh) and DistilBERT's pre_classifier (ReLU) do its job.
        config.update(has_pooler=True)
        if ckpt.family != "bert":
            config.update(pooler_is_head=True, pooler_act="relu" if ckpt.family == "distilbert" else "tanh")
    elif head == masked_lm.MASKED_LM:
        pass  # config_keys: no pooler (BertForPreTraining's only feeds its next-sentence head)
    elif head == "none" and ckpt.family != "distilbert":
        config.update(has_pooler=any(n in ckpt.weights for n in ("pooler.dense.weight", "pooler.dense.bias")))
    else:
        # Question answering and token classification models are built without a pooler; DistilBERT has none.
        config.update(has_pooler=False)
    try:  # the engine's own rules, so that no file is written that it would refuse to load
        core().encoder_spec(config)
    except ValueError as exc:
        raise UnsupportedModelError(f"cannot export {ckpt.source}: {exc}") from None
    return config
