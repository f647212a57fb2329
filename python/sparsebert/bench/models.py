"""The models a benchmark runs: random BERTs pruned on the fly, packed files, checkpoint directories.

Every benchmark goes through one ``.sbert`` file, whatever the user gave: sparsebert loads it, and the peers
(ONNX Runtime, PyTorch, DeepSparse) run a ``transformers`` model rebuilt from that same file
(``to_transformers``), so all engines compute with bit-identical weights and a difference in speed is a
difference in runtime, never in model.
"""

from __future__ import annotations

import copy
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..convert import export
from ..convert.hf_names import LAYER_NAMES
from ..format import PackedModel, read_model
from ..format.layouts import BLOCK
from ..pruning import prune_bert_

# name -> config arguments (BertConfig's names; FAMILIES gives the family when not BERT).  "tiny" (and its
# RoBERTa / DistilBERT twins) exist for the tests: small enough to export and run in well under a second.
RANDOM_CONFIGS: dict[str, dict[str, int]] = {
    "bert-base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                      vocab_size=30522, max_position_embeddings=512),
    "bert-large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                       vocab_size=30522, max_position_embeddings=512),
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                 vocab_size=512, max_position_embeddings=128),
    "roberta-base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                         vocab_size=50265, max_position_embeddings=514),
    "distilbert-base": dict(hidden_size=768, num_hidden_layers=6, num_attention_heads=12, intermediate_size=3072,
                            vocab_size=30522, max_position_embeddings=512),
    "tiny-roberta": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                         vocab_size=512, max_position_embeddings=130),
    "tiny-distilbert": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                            vocab_size=512, max_position_embeddings=128),
}
FAMILIES = {"roberta-base": "roberta", "distilbert-base": "distilbert", "tiny-roberta": "roberta",
            "tiny-distilbert": "distilbert"}  # the others are BERT
# transformers class name prefix of each family
CLASS_PREFIX = {"bert": "Bert", "roberta": "Roberta", "distilbert": "DistilBert"}

# encoder config "head" -> the transformers class name suffix that has it
HF_CLASSES = {
    "none": "Model",
    "sequence_classification": "ForSequenceClassification",
    "question_answering": "ForQuestionAnswering",
    "token_classification": "ForTokenClassification",
}
HEADS = tuple(HF_CLASSES)


def hf_class_name(family: str, head: str) -> str:
    return CLASS_PREFIX[family] + HF_CLASSES[head]


@dataclass
class ModelSource:
    """A packed model to benchmark, and how it was obtained.  Close it (or use ``with``) to remove temp files."""

    path: str  # the .sbert file all engines' weights come from
    description: str  # one line for tables and plot titles
    origin: dict[str, Any]  # kind (file | checkpoint | random) and its parameters, recorded in the JSON
    _tmp: Any = field(default=None, repr=False)

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> ModelSource:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _tempdir(workdir: str | None) -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="sparsebert-bench-", dir=workdir)


def describe_pruning(sparsity: float, block: int) -> str:
    return "dense" if sparsity == 0 else f"{sparsity:.0%} {'4-block' if block == BLOCK else 'unstructured'}"


# ---------------------------------------------------------------------------------------------- random models


def random_model(name: str = "bert-base", seed: int = 0, head: str = "none") -> Any:
    """A random-init, eval-mode fp32 ``transformers`` BERT of a named size (see ``RANDOM_CONFIGS``).

    Speed does not depend on the values, but agreement checks do: biases and LayerNorm parameters are made
    non-trivial (BERT's init leaves them at 0 and (1, 0), which would hide a dropped bias).
    """
    if name not in RANDOM_CONFIGS:
        raise ValueError(f"unknown random model {name!r}; choose from {', '.join(RANDOM_CONFIGS)}")
    if head not in HF_CLASSES:
        raise ValueError(f"unknown head {head!r}; choose from {', '.join(HEADS)}")
    import torch

    family = FAMILIES.get(name, "bert")
    config = hf_config(dict(RANDOM_CONFIGS[name], model_type=family, hidden_act="gelu", layer_norm_eps=1e-12,
                            type_vocab_size=1 if family != "bert" else 2, head=head,
                            num_labels=2, pad_token_id=1 if family == "roberta" else 0))
    torch.manual_seed(seed)
    model = getattr(_transformers(), hf_class_name(family, head))(config)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname.endswith("LayerNorm.weight") or pname.endswith("layer_norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            elif pname.endswith("bias"):
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))
    return model.float().eval()


def _transformers() -> Any:
    import transformers

    return transformers


def export_pruned(model: Any, sparsity: float, block: int, path: str, layout: str = "auto",
                  quantize: str | None = None) -> Any:
    """Magnitude-prune a copy of ``model`` (the original stays dense, for the next sweep point) and export it."""
    pruned = prune_bert_(copy.deepcopy(model), sparsity, block)
    # Not compacted: the peers are rebuilt from this file and must hold exactly the pruned weights.
    return export(pruned, path, layout=layout, verbose=False, compact=False, quantize=quantize)


def random_source(name: str = "bert-base", sparsity: float = 0.9, block: int = 1, seed: int = 0,
                  head: str = "none", layout: str = "auto", workdir: str | None = None,
                  model: Any = None, quantize: str | None = None) -> ModelSource:
    """A random ``name`` BERT, magnitude-pruned, exported to a temporary ``.sbert``.

    Pass ``model`` (from ``random_model``) to reuse one dense model for several sparsities.
    """
    if model is None:
        model = random_model(name, seed, head)
    tmp = _tempdir(workdir)
    try:
        path = os.path.join(tmp.name, f"{name}.sbert")
        export_pruned(model, sparsity, block, path, layout, quantize)
    except BaseException:
        tmp.cleanup()
        raise
    origin = dict(kind="random", name=name, sparsity=sparsity, block=block, seed=seed, head=head, layout=layout,
                  **({"quantize": quantize} if quantize else {}))
    how = f"seed {seed}" if sparsity == 0 else f"magnitude-pruned, seed {seed}"
    desc = f"random {name}, {describe_pruning(sparsity, block)}{', int8' if quantize else ''} ({how})"
    return ModelSource(path, desc, origin, tmp)


def file_source(source: str | os.PathLike, layout: str = "auto", workdir: str | None = None,
                quantize: str | None = None) -> ModelSource:
    """A packed ``.sbert`` file as is, or a checkpoint directory exported to a temporary ``.sbert``."""
    source = os.fspath(source)
    if not os.path.exists(source):
        raise FileNotFoundError(f"no such model file or checkpoint directory: {source}")
    if not os.path.isdir(source):
        return ModelSource(source, os.path.basename(source), dict(kind="file", path=os.path.abspath(source)))
    tmp = _tempdir(workdir)
    try:
        path = os.path.join(tmp.name, "model.sbert")
        export(source, path, layout=layout, verbose=False, quantize=quantize)
    except BaseException:
        tmp.cleanup()
        raise
    name = os.path.basename(os.path.normpath(source))
    return ModelSource(path, f"{name} (checkpoint, exported with layout={layout})",
                       dict(kind="checkpoint", path=os.path.abspath(source), layout=layout), tmp)


# ---------------------------------------------------------------------------------------------- packed -> dense


def dense_weight(layout: str, arrays: dict[str, np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """The dense float32 [N, K] weight a packed linear stores (the inverse of ``convert.pack.pack_linear``)."""
    n_rows, n_cols = shape
    if layout == "dense":
        return np.array(arrays["weight"], dtype=np.float32, copy=True)
    weight = np.zeros((n_rows, n_cols), dtype=np.float32)
    if layout == "unstructured":
        ptr, cols, values = arrays["row_ptr"], arrays["col_idx"], arrays["values"]
        rows = np.repeat(np.arange(n_rows), np.diff(ptr))
        weight[rows, cols.astype(np.intp)] = values
        return weight
    if layout in ("block4", "block4_int8"):
        ptr, blocks, values = arrays["block_ptr"], arrays["block_col"], arrays["block_values"]
        rows = np.repeat(np.arange(n_rows), np.diff(ptr))
        if layout == "block4_int8":  # the peers run the dequantized weights: what the int8 engine multiplies by
            values = values.astype(np.float32) * np.asarray(arrays["scales"], np.float32)[rows, None]
        # Write into a K padded to whole blocks, then drop the lanes past K (the format keeps them zero).
        padded = np.zeros((n_rows, -(-n_cols // BLOCK) * BLOCK), dtype=np.float32)
        for lane in range(BLOCK):
            padded[rows, blocks.astype(np.intp) * BLOCK + lane] = values[:, lane]
        weight[:] = padded[:, :n_cols]
        return weight
    raise ValueError(f"unknown layout {layout!r}")


# Canonical embedding tensor -> transformers name (layers: convert/hf_names.py).
_EMBEDDINGS = {
    "embeddings.word_embeddings": "embeddings.word_embeddings.weight",
    "embeddings.position_embeddings": "embeddings.position_embeddings.weight",
    "embeddings.token_type_embeddings": "embeddings.token_type_embeddings.weight",
    "embeddings.layer_norm.weight": "embeddings.LayerNorm.weight",
    "embeddings.layer_norm.bias": "embeddings.LayerNorm.bias",
}


def _pad_rows(a: np.ndarray, n: int) -> np.ndarray:
    return a if a.shape[0] == n else np.concatenate([a, np.zeros((n - a.shape[0], *a.shape[1:]), a.dtype)])


def _pad_cols(a: np.ndarray, n: int) -> np.ndarray:
    return a if a.shape[1] == n else np.concatenate([a, np.zeros((a.shape[0], n - a.shape[1]), a.dtype)], axis=1)


def hf_state_dict(model: PackedModel) -> dict[str, np.ndarray]:
    """The packed model's weights under ``transformers`` parameter names (the inverse of the exporter's
    mapping, convert/hf_bert.py and hf_distilbert.py)."""
    c = model.config
    family = c["model_type"]
    names = LAYER_NAMES[family]
    h = c["hidden_size"]
    heads, dh = c["num_attention_heads"], h // c["num_attention_heads"]
    n_layers, inter = c["num_hidden_layers"], c["intermediate_size"]
    kept_heads = c.get("layer_heads") or [heads] * n_layers
    t = model.tensors

    def linear(name: str) -> tuple[np.ndarray, np.ndarray]:
        meta = model.linears[name]
        arrays = model.linear_arrays(name)
        return dense_weight(meta["layout"], arrays, tuple(meta["shape"])), np.array(arrays["bias"], np.float32)

    def put(hf_name: str, weight: np.ndarray, bias: np.ndarray) -> None:
        state[f"{hf_name}.weight"], state[f"{hf_name}.bias"] = weight, bias

    state = {hf: model.float32_array(ours) for ours, hf in _EMBEDDINGS.items()}
    if family == "distilbert":
        state.pop(_EMBEDDINGS["embeddings.token_type_embeddings"])  # the exporter's all-zero stand-in
    for i in range(n_layers):
        ours = f"layers.{i}"
        # A compacted layer (convert/compaction.py) comes back with its kept heads and neurons first and all-zero
        # ones after them: zero heads and neurons add nothing, so the model computes the same function.
        width = kept_heads[i] * dh
        w, b = linear(f"{ours}.attention.qkv")
        for j, part in enumerate(names["qkv"]):  # qkv rows: Q, then K, then V
            rows = slice(j * width, (j + 1) * width)
            put(part.format(i=i), _pad_rows(w[rows], h), _pad_rows(b[rows], h))
        w, b = linear(f"{ours}.attention.output")
        put(names["attention.output"].format(i=i), _pad_cols(w, h), b)
        w, b = linear(f"{ours}.ffn.up")
        put(names["ffn.up"].format(i=i), _pad_rows(w, inter), _pad_rows(b, inter))
        w, b = linear(f"{ours}.ffn.down")
        put(names["ffn.down"].format(i=i), _pad_cols(w, inter), b)
        for norm in ("attention.layer_norm", "ffn.layer_norm"):
            put(names[norm].format(i=i), t[f"{ours}.{norm}.weight"], t[f"{ours}.{norm}.bias"])
    pooler_is_head = c.get("pooler_is_head", False)
    if c["has_pooler"] and not pooler_is_head:
        put("pooler.dense", *linear("pooler"))
    prefix = "" if c["head"] == "none" else f"{family}."
    state = {prefix + k: v for k, v in state.items()}
    # Task heads sit outside the encoder's prefix, as in transformers.
    if c["head"] == "sequence_classification" and family == "roberta":
        put("classifier.dense", *linear("pooler"))
        put("classifier.out_proj", *linear("classifier"))
    elif c["head"] == "sequence_classification" and family == "distilbert":
        put("pre_classifier", *linear("pooler"))
        put("classifier", *linear("classifier"))
    elif c["head"] in ("sequence_classification", "token_classification"):
        put("classifier", *linear("classifier"))
    elif c["head"] == "question_answering":
        put("qa_outputs", *linear("qa_outputs"))
    return state


def hf_config(config: dict[str, Any]) -> Any:
    """The ``transformers`` config (BertConfig, RobertaConfig or DistilBertConfig) of an encoder config, with eager
    attention and no dropout."""
    import transformers

    family = config.get("model_type", "bert")
    extra: dict[str, Any] = {}
    if config["head"] in ("sequence_classification", "token_classification"):
        labels = config.get("id2label") or {str(i): f"LABEL_{i}" for i in range(config["num_labels"])}
        extra["id2label"] = {int(k): v for k, v in labels.items()}
    elif config["head"] == "question_answering":
        extra["num_labels"] = config["num_labels"]
    elif config.get("num_labels"):
        extra["num_labels"] = config["num_labels"]
    if family == "distilbert":
        return transformers.DistilBertConfig(
            vocab_size=config["vocab_size"], dim=config["hidden_size"], n_layers=config["num_hidden_layers"],
            n_heads=config["num_attention_heads"], hidden_dim=config["intermediate_size"],
            activation=config["hidden_act"], max_position_embeddings=config["max_position_embeddings"],
            dropout=0.0, attention_dropout=0.0, qa_dropout=0.0, seq_classif_dropout=0.0,
            pad_token_id=config.get("pad_token_id", 0), attn_implementation="eager", **extra,
        )
    cls = transformers.RobertaConfig if family == "roberta" else transformers.BertConfig
    if family == "roberta":
        extra["pad_token_id"] = config.get("pad_token_id", 1)
    return cls(
        vocab_size=config["vocab_size"], hidden_size=config["hidden_size"],
        num_hidden_layers=config["num_hidden_layers"], num_attention_heads=config["num_attention_heads"],
        intermediate_size=config["intermediate_size"], hidden_act=config["hidden_act"],
        max_position_embeddings=config["max_position_embeddings"], type_vocab_size=config["type_vocab_size"],
        layer_norm_eps=config["layer_norm_eps"], hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        attn_implementation="eager", **extra,
    )


def to_transformers(model: PackedModel | str | os.PathLike) -> Any:
    """The eval-mode fp32 ``transformers`` model equal to a packed model: same family, class, head and weights.

    Every parameter of the built model must be assigned from the file and every weight of the file used,
    otherwise ValueError: a silently random parameter would make the peers run a different model.
    """
    import torch
    import transformers

    if not isinstance(model, PackedModel):
        model = read_model(model)
    config = model.config
    family = config.get("model_type", "bert")
    if config["head"] not in HF_CLASSES:  # the masked-LM head: its peers would time the decoder, not the encoder
        raise ValueError(f"benchmarks run models with heads {', '.join(HEADS)}; this one has head "
                         f"{config['head']!r}: benchmark the bare encoder (export without head='masked_lm')")
    cls = getattr(transformers, hf_class_name(family, config["head"]))
    kwargs = {"add_pooling_layer": config["has_pooler"]} if config["head"] == "none" and family != "distilbert" else {}
    module = cls(hf_config(config), **kwargs).float().eval()
    state = hf_state_dict(model)
    params = dict(module.named_parameters())
    missing = sorted(set(params) - set(state))
    unused = sorted(set(state) - set(params))
    if missing or unused:
        raise ValueError(f"cannot rebuild {cls.__name__} from {model.path}: parameters not in the file "
                         f"{missing}, file weights without a parameter {unused}")
    with torch.no_grad():
        for name, param in params.items():
            value = torch.from_numpy(np.array(state[name], dtype=np.float32, copy=True))
            if tuple(value.shape) != tuple(param.shape):
                raise ValueError(f"{name}: file has shape {tuple(value.shape)}, model expects {tuple(param.shape)}")
            param.copy_(value)
    return module


__all__ = ["HEADS", "RANDOM_CONFIGS", "ModelSource", "dense_weight", "export_pruned", "file_source", "hf_config",
           "hf_state_dict", "random_model", "random_source", "to_transformers"]
