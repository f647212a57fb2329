"""Read a transformers BERT checkpoint and map it onto the encoder tensors of ARCHITECTURE.md.

Sources: a model object (BertModel, BertForSequenceClassification,
BertForQuestionAnswering) or a checkpoint directory with ``config.json`` and
``model.safetensors`` (read with ``safetensors.numpy``, so no torch is needed) or
``pytorch_model.bin`` (``torch.load(weights_only=True)``: never unpickle code).

Everything that does not fit is collected and reported in one
UnsupportedModelError, so a user fixes a checkpoint in one round trip.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Union

import numpy as np

from ..errors import UnsupportedModelError
from ..format import spec

# transformers class / config.architectures entry -> encoder head
SUPPORTED_ARCHITECTURES = {
    "BertModel": "none",
    "BertForSequenceClassification": "sequence_classification",
    "BertForQuestionAnswering": "question_answering",
}
SUPPORTED_ACTIVATIONS = spec.HIDDEN_ACTS

# BertConfig's defaults: a config.json only lists what differs from them.
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
}
INT_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
            "max_position_embeddings", "type_vocab_size")
DEFAULT_NUM_LABELS = 2  # PretrainedConfig's default when a config names no labels

ENCODER_PREFIX = "bert."  # task models keep the encoder under .bert; BertModel has no prefix
# Very old TF-converted checkpoints name LayerNorm parameters gamma/beta.
LEGACY_SUFFIXES = {"LayerNorm.gamma": "LayerNorm.weight", "LayerNorm.beta": "LayerNorm.bias"}

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PYTORCH_BIN = "pytorch_model.bin"


@dataclass
class Checkpoint:
    hf_config: dict[str, Any]
    weights: dict[str, np.ndarray]  # names without the "bert." prefix
    architecture: str
    source: str  # for messages and the file's producer record
    prefixed: bool  # whether the source named encoder weights "bert.*"


# ---------------------------------------------------------------------------------------------- loading


def load_checkpoint(source: Any) -> Checkpoint:
    if isinstance(source, (str, os.PathLike)):
        return _load_directory(os.fspath(source))
    if hasattr(source, "state_dict") and hasattr(source, "config"):
        return _load_model_object(source)
    raise TypeError(
        f"export() takes a checkpoint directory or a transformers BERT model, got {type(source).__name__}"
    )


def _canonical(raw: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    weights, prefixed = {}, False
    for name, value in raw.items():
        if name.startswith(ENCODER_PREFIX):
            name, prefixed = name[len(ENCODER_PREFIX):], True
        for old, new in LEGACY_SUFFIXES.items():
            if name.endswith(old):
                name = name[: -len(old)] + new
        weights[name] = value
    return weights, prefixed


def _architecture_of_class(model: Any) -> str:
    for cls in type(model).__mro__:
        if cls.__name__ in SUPPORTED_ARCHITECTURES:
            return cls.__name__
    raise UnsupportedModelError(
        f"cannot export a {type(model).__name__}; supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
    )


def _load_model_object(model: Any) -> Checkpoint:
    import torch

    architecture = _architecture_of_class(model)
    raw = {}
    for name, tensor in model.state_dict().items():
        if torch.is_tensor(tensor) and tensor.is_floating_point():
            # float32 on CPU is shared, not copied; half/bfloat16 weights are widened.
            raw[name] = tensor.detach().to("cpu", torch.float32).numpy()
    weights, prefixed = _canonical(raw)
    name = getattr(model.config, "_name_or_path", "") or ""
    source = f"{type(model).__name__}" + (f" ({name})" if name else "")
    return Checkpoint(model.config.to_dict(), weights, architecture, source, prefixed)


def _load_directory(path: str) -> Checkpoint:
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such checkpoint directory: {path}")
    if not os.path.isdir(path):
        raise UnsupportedModelError(f"{path} is not a directory; export a transformers checkpoint directory")
    config_path = os.path.join(path, "config.json")
    try:
        with open(config_path, encoding="utf-8") as f:
            hf_config = json.load(f)
    except FileNotFoundError:
        raise UnsupportedModelError(f"{path} has no config.json; not a transformers checkpoint") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UnsupportedModelError(f"{config_path} is not valid JSON ({exc})") from None
    if not isinstance(hf_config, dict):
        raise UnsupportedModelError(f"{config_path} does not hold a JSON object")
    # Refuse on the config alone before reading (possibly gigabytes of) weights.
    check_hf_config(hf_config, path)
    architecture = _architecture_of_config(hf_config, path)
    weights, prefixed = _canonical(_read_weights(path))
    if architecture is None:
        architecture = _architecture_of_weights(weights)
    return Checkpoint(hf_config, weights, architecture, path, prefixed)


def _architecture_of_config(hf_config: dict[str, Any], path: str) -> str | None:
    names = hf_config.get("architectures") or []
    if not isinstance(names, list):
        raise UnsupportedModelError(f"{path}: config.json architectures must be a list, got {names!r}")
    if not names:
        return None
    if names[0] not in SUPPORTED_ARCHITECTURES:
        raise UnsupportedModelError(
            f"{path}: architecture {names[0]} is not supported; supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
        )
    return names[0]


def _architecture_of_weights(weights: dict[str, Any]) -> str:
    # Configs saved without "architectures": the head weights tell what the model is.
    if "classifier.weight" in weights:
        return "BertForSequenceClassification"
    if "qa_outputs.weight" in weights:
        return "BertForQuestionAnswering"
    return "BertModel"


def _read_weights(path: str) -> dict[str, np.ndarray]:
    single = os.path.join(path, SAFETENSORS)
    if os.path.isfile(single):
        return _read_safetensors(single)
    index = os.path.join(path, SAFETENSORS_INDEX)
    if os.path.isfile(index):
        try:
            with open(index, encoding="utf-8") as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UnsupportedModelError(f"cannot read {index}: {exc!r}") from None
        weights = {}
        for shard in shards:
            weights.update(_read_safetensors(os.path.join(path, shard)))
        return weights
    pickle_path = os.path.join(path, PYTORCH_BIN)
    if os.path.isfile(pickle_path):
        return _read_pytorch_bin(pickle_path)
    raise UnsupportedModelError(f"{path} holds no {SAFETENSORS}, {SAFETENSORS_INDEX} or {PYTORCH_BIN}")


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(path)
    except SafetensorError as exc:
        raise UnsupportedModelError(f"cannot read {path}: {exc}") from None
    except TypeError as exc:
        # numpy has no bfloat16: such files need torch to widen them.
        try:
            import torch
            from safetensors.torch import load_file as load_torch
        except ImportError:
            raise UnsupportedModelError(f"cannot read {path} without torch ({exc})") from None
        try:
            tensors = load_torch(path)
        except SafetensorError as exc2:
            raise UnsupportedModelError(f"cannot read {path}: {exc2}") from None
        return {n: t.to(torch.float32).numpy() for n, t in tensors.items() if t.is_floating_point()}


def _read_pytorch_bin(path: str) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise UnsupportedModelError(f"reading {path} needs torch; or convert it to model.safetensors") from None
    try:
        # weights_only: a checkpoint is data, never code to run.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for bad files
        raise UnsupportedModelError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None
    if not isinstance(state, dict):
        raise UnsupportedModelError(f"{path} does not hold a state dict")
    return {n: t.to(torch.float32).numpy() for n, t in state.items() if torch.is_tensor(t) and t.is_floating_point()}


# ---------------------------------------------------------------------------------------------- mapping


def _with_defaults(hf_config: dict[str, Any]) -> dict[str, Any]:
    return {**BERT_DEFAULTS, **{k: v for k, v in hf_config.items() if v is not None}}


def check_hf_config(hf_config: dict[str, Any], source: str) -> None:
    """Refuse configs we cannot run, listing every reason; cheap, so it runs before weights are read."""
    hf = _with_defaults(hf_config)
    problems = []
    model_type = hf.get("model_type", "bert")  # very old configs predate model_type
    if model_type != "bert":
        problems.append(f"model_type is {model_type!r}, only 'bert' is supported")
    if hf["position_embedding_type"] != "absolute":
        problems.append(f"position_embedding_type {hf['position_embedding_type']!r} is not supported (only 'absolute')")
    if hf["is_decoder"]:
        problems.append("is_decoder is true; only encoders are supported")
    if hf["add_cross_attention"]:
        problems.append("add_cross_attention is true; cross-attention is not supported")
    act = hf["hidden_act"]
    if not isinstance(act, str) or act not in SUPPORTED_ACTIVATIONS:
        problems.append(f"hidden_act {act!r} is not supported (supported: {', '.join(SUPPORTED_ACTIVATIONS)})")
    for key in INT_KEYS:
        if not spec.is_int(hf[key]) or hf[key] < 1:
            problems.append(f"{key} must be a positive integer, got {hf[key]!r}")
    eps = hf["layer_norm_eps"]
    if not spec.is_number(eps) or eps <= 0:
        problems.append(f"layer_norm_eps must be a positive number, got {eps!r}")
    if not problems and hf["hidden_size"] % hf["num_attention_heads"]:
        problems.append(f"hidden_size {hf['hidden_size']} is not a multiple of num_attention_heads "
                        f"{hf['num_attention_heads']}")
    if problems:
        raise UnsupportedModelError(f"cannot export {source}: " + "; ".join(problems))


def encoder_config(ckpt: Checkpoint) -> dict[str, Any]:
    """The encoder config (ARCHITECTURE.md) for a checkpoint, or UnsupportedModelError listing every misfit."""
    check_hf_config(ckpt.hf_config, ckpt.source)
    hf = _with_defaults(ckpt.hf_config)
    act, eps = hf["hidden_act"], hf["layer_norm_eps"]
    head = SUPPORTED_ARCHITECTURES[ckpt.architecture]
    config = {key: hf[key] for key in INT_KEYS}
    config.update(model_type="bert", layer_norm_eps=float(eps), hidden_act=act, head=head)
    if head == "sequence_classification":
        id2label = hf.get("id2label")
        labels = {str(k): str(v) for k, v in id2label.items()} if isinstance(id2label, dict) and id2label else None
        num_labels = len(labels) if labels else hf.get("num_labels", DEFAULT_NUM_LABELS)
        if not spec.is_int(num_labels) or num_labels < 1:
            raise UnsupportedModelError(
                f"cannot export {ckpt.source}: num_labels {num_labels!r} is not a positive integer"
            )
        config.update(num_labels=num_labels, has_pooler=True)
        config["id2label"] = labels or {str(i): f"LABEL_{i}" for i in range(num_labels)}
    elif head == "question_answering":
        # BertForQuestionAnswering is built without a pooler.
        config.update(num_labels=spec.QA_OUTPUTS, has_pooler=False)
    else:
        has_pooler = any(n in ckpt.weights for n in ("pooler.dense.weight", "pooler.dense.bias"))
        config.update(num_labels=0, has_pooler=has_pooler)
    return config


class _Collector:
    """Takes weights by HF name, checking shapes, and remembers every problem for one report."""

    def __init__(self, ckpt: Checkpoint):
        self.ckpt = ckpt
        self.missing: list[str] = []
        self.wrong: list[str] = []
        self.nonfinite: list[str] = []

    def shown(self, name: str, encoder: bool) -> str:
        # Name weights the way the source does, so users can grep for them.
        return (ENCODER_PREFIX if encoder and self.ckpt.prefixed else "") + name

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
    h, n_inter = config["hidden_size"], config["intermediate_size"]
    take = _Collector(ckpt)
    items: dict[str, Any] = {
        "embeddings.word_embeddings": take.take("embeddings.word_embeddings.weight", (config["vocab_size"], h)),
        "embeddings.position_embeddings": take.take(
            "embeddings.position_embeddings.weight", (config["max_position_embeddings"], h)),
        "embeddings.token_type_embeddings": take.take(
            "embeddings.token_type_embeddings.weight", (config["type_vocab_size"], h)),
        "embeddings.layer_norm.weight": take.take("embeddings.LayerNorm.weight", (h,)),
        "embeddings.layer_norm.bias": take.take("embeddings.LayerNorm.bias", (h,)),
    }
    for i in range(config["num_hidden_layers"]):
        hf, ours = f"encoder.layer.{i}", f"layers.{i}"
        qkv = [take.linear(f"{hf}.attention.self.{part}", h, h) for part in ("query", "key", "value")]
        # One [3H, H] matmul instead of three: rows are Q, then K, then V.
        items[f"{ours}.attention.qkv"] = (
            (np.concatenate([w for w, _ in qkv]), np.concatenate([b for _, b in qkv]))
            if all(w is not None and b is not None for w, b in qkv) else None
        )
        items[f"{ours}.attention.output"] = take.linear(f"{hf}.attention.output.dense", h, h)
        items[f"{ours}.attention.layer_norm.weight"] = take.take(f"{hf}.attention.output.LayerNorm.weight", (h,))
        items[f"{ours}.attention.layer_norm.bias"] = take.take(f"{hf}.attention.output.LayerNorm.bias", (h,))
        items[f"{ours}.ffn.up"] = take.linear(f"{hf}.intermediate.dense", n_inter, h)
        items[f"{ours}.ffn.down"] = take.linear(f"{hf}.output.dense", h, n_inter)
        items[f"{ours}.ffn.layer_norm.weight"] = take.take(f"{hf}.output.LayerNorm.weight", (h,))
        items[f"{ours}.ffn.layer_norm.bias"] = take.take(f"{hf}.output.LayerNorm.bias", (h,))
    if config["has_pooler"]:
        items["pooler"] = take.linear("pooler.dense", h, h)
    if config["head"] == "sequence_classification":
        items["classifier"] = take.linear("classifier", config["num_labels"], h, encoder=False)
    elif config["head"] == "question_answering":
        items["qa_outputs"] = take.linear("qa_outputs", spec.QA_OUTPUTS, h, encoder=False)
    take.raise_if_any()
    return items
