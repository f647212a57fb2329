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

from ..format import PackedModel, read_model
from ..format.layouts import BLOCK

# name -> BertConfig arguments.  "tiny" exists for the tests: small enough to export and run in well under a second.
RANDOM_CONFIGS: dict[str, dict[str, int]] = {
    "bert-base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                      vocab_size=30522, max_position_embeddings=512),
    "bert-large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                       vocab_size=30522, max_position_embeddings=512),
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                 vocab_size=512, max_position_embeddings=128),
}

# encoder config "head" -> the transformers class that has it
HF_CLASSES = {
    "none": "BertModel",
    "sequence_classification": "BertForSequenceClassification",
    "question_answering": "BertForQuestionAnswering",
}
HEADS = tuple(HF_CLASSES)


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
    import transformers

    config = transformers.BertConfig(**RANDOM_CONFIGS[name], hidden_dropout_prob=0.0,
                                     attention_probs_dropout_prob=0.0, attn_implementation="eager",
                                     num_labels=2)
    torch.manual_seed(seed)
    model = getattr(transformers, HF_CLASSES[head])(config)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname.endswith("LayerNorm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            elif pname.endswith("bias"):
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))
    return model.float().eval()


def export_pruned(model: Any, sparsity: float, block: int, path: str, layout: str = "auto") -> Any:
    """Magnitude-prune a copy of ``model`` (the original stays dense, for the next sweep point) and export it."""
    from ..export import export
    from ..pruning import prune_bert_

    pruned = prune_bert_(copy.deepcopy(model), sparsity, block)
    # Not compacted: the peers are rebuilt from this file and must hold exactly the pruned weights.
    return export(pruned, path, layout=layout, verbose=False, compact=False)


def random_source(name: str = "bert-base", sparsity: float = 0.9, block: int = 1, seed: int = 0,
                  head: str = "none", layout: str = "auto", workdir: str | None = None,
                  model: Any = None) -> ModelSource:
    """A random ``name`` BERT, magnitude-pruned, exported to a temporary ``.sbert``.

    Pass ``model`` (from ``random_model``) to reuse one dense model for several sparsities.
    """
    if model is None:
        model = random_model(name, seed, head)
    tmp = _tempdir(workdir)
    try:
        path = os.path.join(tmp.name, f"{name}.sbert")
        export_pruned(model, sparsity, block, path, layout)
    except BaseException:
        tmp.cleanup()
        raise
    origin = dict(kind="random", name=name, sparsity=sparsity, block=block, seed=seed, head=head, layout=layout)
    how = f"seed {seed}" if sparsity == 0 else f"magnitude-pruned, seed {seed}"
    desc = f"random {name}, {describe_pruning(sparsity, block)} ({how})"
    return ModelSource(path, desc, origin, tmp)


def file_source(source: str | os.PathLike, layout: str = "auto", workdir: str | None = None) -> ModelSource:
    """A packed ``.sbert`` file as is, or a checkpoint directory exported to a temporary ``.sbert``."""
    source = os.fspath(source)
    if not os.path.exists(source):
        raise FileNotFoundError(f"no such model file or checkpoint directory: {source}")
    if not os.path.isdir(source):
        return ModelSource(source, os.path.basename(source), dict(kind="file", path=os.path.abspath(source)))
    from ..export import export

    tmp = _tempdir(workdir)
    try:
        path = os.path.join(tmp.name, "model.sbert")
        export(source, path, layout=layout, verbose=False)
    except BaseException:
        tmp.cleanup()
        raise
    name = os.path.basename(os.path.normpath(source))
    return ModelSource(path, f"{name} (checkpoint, exported with layout={layout})",
                       dict(kind="checkpoint", path=os.path.abspath(source), layout=layout), tmp)


# ---------------------------------------------------------------------------------------------- packed -> dense


def dense_weight(layout: str, arrays: dict[str, np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """The dense float32 [N, K] weight a packed linear stores (the inverse of ``packing.pack_arrays``)."""
    n_rows, n_cols = shape
    if layout == "dense":
        return np.array(arrays["weight"], dtype=np.float32, copy=True)
    weight = np.zeros((n_rows, n_cols), dtype=np.float32)
    if layout == "unstructured":
        ptr, cols, values = arrays["row_ptr"], arrays["col_idx"], arrays["values"]
        rows = np.repeat(np.arange(n_rows), np.diff(ptr))
        weight[rows, cols.astype(np.intp)] = values
        return weight
    if layout == "block4":
        ptr, blocks, values = arrays["block_ptr"], arrays["block_col"], arrays["block_values"]
        rows = np.repeat(np.arange(n_rows), np.diff(ptr))
        # Write into a K padded to whole blocks, then drop the lanes past K (the format keeps them zero).
        padded = np.zeros((n_rows, -(-n_cols // BLOCK) * BLOCK), dtype=np.float32)
        for lane in range(BLOCK):
            padded[rows, blocks.astype(np.intp) * BLOCK + lane] = values[:, lane]
        weight[:] = padded[:, :n_cols]
        return weight
    raise ValueError(f"unknown layout {layout!r}")


def _pad_rows(a: np.ndarray, n: int) -> np.ndarray:
    return a if a.shape[0] == n else np.concatenate([a, np.zeros((n - a.shape[0], *a.shape[1:]), a.dtype)])


def _pad_cols(a: np.ndarray, n: int) -> np.ndarray:
    return a if a.shape[1] == n else np.concatenate([a, np.zeros((a.shape[0], n - a.shape[1]), a.dtype)], axis=1)


def hf_state_dict(model: PackedModel) -> dict[str, np.ndarray]:
    """The packed model's weights under ``transformers`` parameter names (the inverse of ``hf_bert``)."""
    c = model.config
    h = c["hidden_size"]
    prefix = "" if c["head"] == "none" else "bert."
    t = model.tensors

    def linear(name: str) -> tuple[np.ndarray, np.ndarray]:
        meta = model.linears[name]
        arrays = model.linear_arrays(name)
        return dense_weight(meta["layout"], arrays, tuple(meta["shape"])), np.array(arrays["bias"], np.float32)

    heads, dh = c["num_attention_heads"], h // c["num_attention_heads"]
    n_layers, inter = c["num_hidden_layers"], c["intermediate_size"]
    kept_heads = c.get("layer_heads") or [heads] * n_layers
    kept_neurons = c.get("layer_intermediate") or [inter] * n_layers

    state = {
        "embeddings.word_embeddings.weight": t["embeddings.word_embeddings"],
        "embeddings.position_embeddings.weight": t["embeddings.position_embeddings"],
        "embeddings.token_type_embeddings.weight": t["embeddings.token_type_embeddings"],
        "embeddings.LayerNorm.weight": t["embeddings.layer_norm.weight"],
        "embeddings.LayerNorm.bias": t["embeddings.layer_norm.bias"],
    }
    for i in range(n_layers):
        hf, ours = f"encoder.layer.{i}", f"layers.{i}"
        # A compacted layer (export/compaction.py) comes back with its kept heads and neurons first and all-zero
        # ones after them: zero heads and neurons add nothing, so the model computes the same function.
        width = kept_heads[i] * dh
        w, b = linear(f"{ours}.attention.qkv")
        for j, part in enumerate(("query", "key", "value")):  # qkv rows: Q, then K, then V
            state[f"{hf}.attention.self.{part}.weight"] = _pad_rows(w[j * width:(j + 1) * width], h)
            state[f"{hf}.attention.self.{part}.bias"] = _pad_rows(b[j * width:(j + 1) * width], h)
        w, b = linear(f"{ours}.attention.output")
        state[f"{hf}.attention.output.dense.weight"], state[f"{hf}.attention.output.dense.bias"] = _pad_cols(w, h), b
        w, b = linear(f"{ours}.ffn.up")
        state[f"{hf}.intermediate.dense.weight"], state[f"{hf}.intermediate.dense.bias"] = (
            _pad_rows(w, inter), _pad_rows(b, inter))
        w, b = linear(f"{ours}.ffn.down")
        state[f"{hf}.output.dense.weight"], state[f"{hf}.output.dense.bias"] = _pad_cols(w, inter), b
        state[f"{hf}.attention.output.LayerNorm.weight"] = t[f"{ours}.attention.layer_norm.weight"]
        state[f"{hf}.attention.output.LayerNorm.bias"] = t[f"{ours}.attention.layer_norm.bias"]
        state[f"{hf}.output.LayerNorm.weight"] = t[f"{ours}.ffn.layer_norm.weight"]
        state[f"{hf}.output.LayerNorm.bias"] = t[f"{ours}.ffn.layer_norm.bias"]
    if c["has_pooler"]:
        state["pooler.dense.weight"], state["pooler.dense.bias"] = linear("pooler")
    state = {prefix + k: v for k, v in state.items()}
    # Task heads sit outside the "bert." prefix, as in transformers.
    if c["head"] == "sequence_classification":
        state["classifier.weight"], state["classifier.bias"] = linear("classifier")
    elif c["head"] == "question_answering":
        state["qa_outputs.weight"], state["qa_outputs.bias"] = linear("qa_outputs")
    return state


def hf_config(config: dict[str, Any]) -> Any:
    """A ``transformers.BertConfig`` for an encoder config (eager attention, no dropout)."""
    import transformers

    extra: dict[str, Any] = {}
    if config["head"] == "sequence_classification":
        labels = config.get("id2label") or {str(i): f"LABEL_{i}" for i in range(config["num_labels"])}
        extra["id2label"] = {int(k): v for k, v in labels.items()}
    elif config["head"] == "question_answering":
        extra["num_labels"] = config["num_labels"]
    return transformers.BertConfig(
        vocab_size=config["vocab_size"], hidden_size=config["hidden_size"],
        num_hidden_layers=config["num_hidden_layers"], num_attention_heads=config["num_attention_heads"],
        intermediate_size=config["intermediate_size"], hidden_act=config["hidden_act"],
        max_position_embeddings=config["max_position_embeddings"], type_vocab_size=config["type_vocab_size"],
        layer_norm_eps=config["layer_norm_eps"], hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        attn_implementation="eager", **extra,
    )


def to_transformers(model: PackedModel | str | os.PathLike) -> Any:
    """The eval-mode fp32 ``transformers`` model equal to a packed model: same class, head and weights.

    Every parameter of the built model must be assigned from the file and every weight of the file used,
    otherwise ValueError: a silently random parameter would make the peers run a different model.
    """
    import torch
    import transformers

    if not isinstance(model, PackedModel):
        model = read_model(model)
    config = model.config
    cls = getattr(transformers, HF_CLASSES[config["head"]])
    kwargs = {"add_pooling_layer": config["has_pooler"]} if config["head"] == "none" else {}
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
