"""What the converter knows of a BERT-family checkpoint, whatever it was read from (a transformers directory or
model object: hf_checkpoint.py; an ONNX file: onnx_import.py): the ``Checkpoint`` record, the architectures and
families sparsebert exports, the naming rules every reader shares, and how a config.json is read.

Weights are renamed to drop the family's encoder prefix (``bert.``, ``roberta.``, ``distilbert.``), so the
mappers (hf_bert.py, hf_distilbert.py) see one naming whether the source was a bare encoder or a task model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import UnsupportedModelError

# transformers class / config.architectures entry -> (family, encoder head)
ARCHITECTURES = {
    "BertModel": ("bert", "none"),
    "BertForSequenceClassification": ("bert", "sequence_classification"),
    "BertForQuestionAnswering": ("bert", "question_answering"),
    "BertForTokenClassification": ("bert", "token_classification"),
    "BertForMaskedLM": ("bert", "masked_lm"),
    "BertForPreTraining": ("bert", "masked_lm"),  # plus a next-sentence head, never exported
    "RobertaModel": ("roberta", "none"),
    "RobertaForSequenceClassification": ("roberta", "sequence_classification"),
    "RobertaForQuestionAnswering": ("roberta", "question_answering"),
    "RobertaForTokenClassification": ("roberta", "token_classification"),
    "RobertaForMaskedLM": ("roberta", "masked_lm"),
    "DistilBertModel": ("distilbert", "none"),
    "DistilBertForSequenceClassification": ("distilbert", "sequence_classification"),
    "DistilBertForQuestionAnswering": ("distilbert", "question_answering"),
    "DistilBertForTokenClassification": ("distilbert", "token_classification"),
    "DistilBertForMaskedLM": ("distilbert", "masked_lm"),
}
FAMILIES = ("bert", "roberta", "distilbert")  # config.json model_type values
ENCODER_PREFIXES = {family: family + "." for family in FAMILIES}  # task models keep the encoder under .<family>
# Very old TF-converted checkpoints name LayerNorm parameters gamma/beta.
LEGACY_SUFFIXES = {"LayerNorm.gamma": "LayerNorm.weight", "LayerNorm.beta": "LayerNorm.bias"}


@dataclass
class Checkpoint:
    hf_config: dict[str, Any]
    weights: dict[str, np.ndarray]  # names without the family's encoder prefix
    family: str  # "bert", "roberta" or "distilbert"
    head: str  # the checkpoint's head: "none", "sequence_classification", "question_answering",
    # "token_classification", "masked_lm" (the head an export keeps: masked_lm.export_head)
    architecture: str  # the transformers class name (or the one inferred from the weights)
    source: str  # for messages and the file's producer record
    prefixed: bool  # whether the source named encoder weights "<family>.*"
    # Quantized checkpoints (qat.py): weight name -> float32 scale per output row of the int8 grid its weight
    # (already dequantized in `weights`) lies on.
    weight_scales: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def prefix(self) -> str:
        return ENCODER_PREFIXES[self.family] if self.prefixed else ""


def supported_list() -> str:
    return ", ".join(ARCHITECTURES)


def canonical_weights(raw: dict[str, Any], family: str) -> tuple[dict[str, Any], bool]:
    """Weights renamed without the family's encoder prefix (and legacy gamma/beta names); whether any had it."""
    prefix = ENCODER_PREFIXES[family]
    weights, prefixed = {}, False
    for name, value in raw.items():
        if name.startswith(prefix):
            name, prefixed = name[len(prefix):], True
        for old, new in LEGACY_SUFFIXES.items():
            if name.endswith(old):
                name = name[: -len(old)] + new
        weights[name] = value
    return weights, prefixed


# Configs saved without "architectures": the head weights tell what the model is. A classifier over every token
# (token classification) is one linear on the encoder output; a sequence classifier comes after a pooler
# (BERT), a dense + tanh (RoBERTa's classifier.dense) or a pre_classifier (DistilBERT).
_CLASS_NAMES = {"bert": "Bert", "roberta": "Roberta", "distilbert": "DistilBert"}
_SEQUENCE_CLASSIFIER_MARKS = {"bert": "pooler.dense.weight", "roberta": "classifier.dense.weight",
                              "distilbert": "pre_classifier.weight"}
# A masked-LM head's transform (the decoder may be left out of a file: it is the word embeddings).
_MASKED_LM_MARKS = {"bert": "cls.predictions.transform.dense.weight", "roberta": "lm_head.dense.weight",
                    "distilbert": "vocab_transform.weight"}


def architecture_of_weights(weights: dict[str, Any], family: str) -> str:
    name = _CLASS_NAMES[family]
    if "cls.seq_relationship.weight" in weights:
        return "BertForPreTraining"
    if _MASKED_LM_MARKS[family] in weights:
        return f"{name}ForMaskedLM"
    if "qa_outputs.weight" in weights:
        return f"{name}ForQuestionAnswering"
    if "classifier.out_proj.weight" in weights or (
        "classifier.weight" in weights and _SEQUENCE_CLASSIFIER_MARKS[family] in weights
    ):
        return f"{name}ForSequenceClassification"
    if "classifier.weight" in weights:
        return f"{name}ForTokenClassification"
    return f"{name}Model"


def read_config_json(path: str) -> dict[str, Any]:
    """A transformers config.json; UnsupportedModelError naming the file unless it holds a JSON object."""
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UnsupportedModelError(f"{path} is not valid JSON ({exc})") from None
    except RecursionError:  # the json module recurses once per level of nesting
        raise UnsupportedModelError(f"{path} is not a config: its JSON is nested too deeply") from None
    if not isinstance(config, dict):
        raise UnsupportedModelError(f"{path} does not hold a JSON object")
    return config
