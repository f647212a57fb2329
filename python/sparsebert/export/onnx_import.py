"""Read a BERT / RoBERTa / DistilBERT encoder from an ONNX file as ``torch.onnx.export`` and Optimum write it.

The graph is recognised by its structure, not by initializer names (the exporters rename weights they fold or
deduplicate): every node carries the scope of the module that emitted it (``/bert/encoder/layer.0/attention/
self/query/MatMul``), so a MatMul or Gemm with a constant weight, the Add of its bias, a LayerNormalization's
scale and bias, and an embedding Gather's table give back the ``transformers`` parameter names. The
transformers ``config.json`` next to the file (or ``config=``) supplies what weights cannot tell (heads,
activation). Graphs with ops the encoder does not have are refused, naming the node and its op.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from ..errors import UnsupportedModelError
from .hf_checkpoint import ARCHITECTURES, Checkpoint, architecture_of_weights, canonical_weights

# What the exporters emit for these encoders (opset 11-17+; LayerNorm fused or decomposed, GELU erf or tanh).
SUPPORTED_OPS = {
    "Add", "And", "Cast", "Concat", "Constant", "ConstantOfShape", "Div", "Equal", "Erf", "Expand", "Flatten",
    "Gather", "Gemm", "Greater", "GreaterOrEqual", "Identity", "LayerNormalization", "Less", "MatMul", "Mul",
    "Neg", "Not", "Pow", "Range", "ReduceMean", "Reshape", "Shape", "Slice", "Softmax", "Sqrt", "Squeeze", "Sub",
    "Tanh", "Transpose", "Unsqueeze", "Where", "Relu", "CumSum", "Min", "Max", "Sigmoid", "Split",
}
QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "MatMulInteger", "QLinearMatMul", "DynamicQuantizeLinear",
                 "ConvInteger", "QAttention"}


# First scope parts of a transformers model's modules: scopes of wrappers around the model come before them.
MODEL_ROOTS = ("bert", "roberta", "distilbert", "embeddings", "encoder", "transformer", "pooler", "classifier",
               "pre_classifier", "qa_outputs")


def _module_of(node_name: str) -> str | None:
    """``/bert/encoder/layer.0/attention/self/query/MatMul`` -> ``bert.encoder.layer.0.attention.self.query``
    (any scope of a wrapper module before the model's own is dropped)."""
    if not node_name.startswith("/"):
        return None
    parts = node_name.strip("/").split("/")[:-1]
    start = next((i for i, part in enumerate(parts) if part in MODEL_ROOTS), None)
    return ".".join(parts[start:]) if start is not None else None


def _constants(graph: Any) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:  # Constant nodes and Identity copies of constants
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
        elif node.op_type == "Identity" and node.input[0] in values:
            values[node.output[0]] = values[node.input[0]]
    return values


def _check_ops(graph: Any, path: str) -> None:
    quantized = [f"{n.name or '?'} ({n.op_type})" for n in graph.node if n.op_type in QUANTIZED_OPS]
    if quantized:
        raise UnsupportedModelError(f"{path} is a quantized (QDQ / integer) graph, which needs int8 support "
                                    f"sparsebert does not have yet: {', '.join(quantized[:5])}")
    unknown = [f"{n.name or '?'} ({n.op_type})" for n in graph.node if n.op_type not in SUPPORTED_OPS]
    if unknown:
        raise UnsupportedModelError(f"{path}: nodes with ops a BERT-family encoder does not have: "
                                    f"{', '.join(unknown[:10])}" + (" ..." if len(unknown) > 10 else ""))


def graph_weights(graph: Any, path: str) -> tuple[dict[str, np.ndarray], float | None]:
    """The ``transformers`` state dict the graph's constants make up, and LayerNormalization's epsilon."""
    values = _constants(graph)
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    weights: dict[str, np.ndarray] = {}
    eps = None

    def put(name: str, value: np.ndarray) -> None:
        if name in weights and not np.array_equal(weights[name], value):
            raise UnsupportedModelError(f"{path}: two different constants for {name}")
        weights[name] = np.ascontiguousarray(value, dtype=np.float32)

    for node in graph.node:
        module = _module_of(node.name)
        if module is None:
            continue
        if node.op_type == "MatMul" and node.input[1] in values and values[node.input[1]].ndim == 2:
            put(f"{module}.weight", values[node.input[1]].T)
            bias_add = [c for c in consumers.get(node.output[0], []) if c.op_type == "Add"
                        and _module_of(c.name) == module]
            for add in bias_add:
                constant = [values[i] for i in add.input if i in values and values[i].ndim == 1]
                if constant:
                    put(f"{module}.bias", constant[0])
        elif node.op_type == "Gemm" and node.input[1] in values:
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            w = values[node.input[1]]
            put(f"{module}.weight", w if trans_b else w.T)
            if len(node.input) > 2 and node.input[2] in values:
                put(f"{module}.bias", values[node.input[2]])
        elif node.op_type == "LayerNormalization":
            put(f"{module}.weight", values[node.input[1]])
            if len(node.input) > 2 and node.input[2] in values:
                put(f"{module}.bias", values[node.input[2]])
            eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        elif node.op_type == "Gather" and node.input[0] in values and values[node.input[0]].ndim == 2:
            put(f"{module}.weight", values[node.input[0]])
        elif module.split(".")[-1] in ("LayerNorm", "layer_norm", "sa_layer_norm", "output_layer_norm"):
            # A decomposed LayerNorm (older opsets): its last Mul scales, its last Add shifts.
            constant = [values[i] for i in node.input if i in values and values[i].ndim == 1
                        and values[i].size > 1]
            if constant and node.op_type == "Mul":
                put(f"{module}.weight", constant[0])
            elif constant and node.op_type == "Add":
                put(f"{module}.bias", constant[0])
    return weights, eps


def load_onnx(path: str, config: Any = None) -> Checkpoint:
    """A Checkpoint (hf_checkpoint.py) from an ONNX file and its transformers config (``config``: a dict, a
    config.json path, or None for the config.json beside the file)."""
    try:
        import onnx
    except ImportError:
        raise UnsupportedModelError("importing ONNX files needs the 'onnx' package: pip install onnx") from None
    if config is None:
        config = os.path.join(os.path.dirname(os.path.abspath(path)), "config.json")
        if not os.path.isfile(config):
            raise UnsupportedModelError(f"{path}: no config.json beside it; pass export(..., config=) with the "
                                        "transformers config (a dict or a config.json path)")
    if not isinstance(config, dict):
        with open(config, encoding="utf-8") as f:
            config = json.load(f)
    try:
        model = onnx.load(path)
    except Exception as exc:  # onnx raises DecodeError and others for files that are not ONNX
        raise UnsupportedModelError(f"cannot read {path} as ONNX: {exc}") from None
    graph = model.graph
    _check_ops(graph, path)
    if not any(_module_of(node.name) for node in graph.node):
        raise UnsupportedModelError(
            f"{path}: no node names carry module scopes (/bert/encoder/layer.0/...), so the weights cannot be "
            "told apart; the torch.export-based exporter (torch.onnx.export(dynamo=True)) writes such graphs: "
            "export with dynamo=False, or with Optimum")
    raw, eps = graph_weights(graph, path)
    family = config.get("model_type", "bert")
    if family not in ("bert", "roberta", "distilbert"):
        raise UnsupportedModelError(f"{path}: model_type {family!r} is not supported")
    weights, prefixed = canonical_weights(raw, family)
    names = config.get("architectures") or []
    architecture = names[0] if names and names[0] in ARCHITECTURES else architecture_of_weights(weights, family)
    config = dict(config)
    if eps is not None and family != "distilbert":
        config["layer_norm_eps"] = eps
    return Checkpoint(config, weights, family, ARCHITECTURES[architecture][1], architecture, path, prefixed)


def check_against_onnxruntime(onnx_path: str, sbert_path: str, atol: float = 1e-4) -> float | None:
    """Runs the ONNX file (ONNX Runtime) and the packed file (sparsebert) on the same random inputs and returns
    the largest difference over the outputs they share; UnsupportedModelError above ``atol``. None when ONNX
    Runtime is not installed."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    from ..engine import SparseEngine

    engine = SparseEngine.load(sbert_path, num_threads=1)
    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    seq = min(16, engine.config["max_position_embeddings"] - 2)
    ids = rng.integers(3, engine.config["vocab_size"], (2, seq), dtype=np.int64)
    mask = np.ones_like(ids)
    mask[1, seq // 2:] = 0
    feeds_all = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    feeds = {i.name: feeds_all[i.name] for i in session.get_inputs() if i.name in feeds_all}
    if len(feeds) != len(session.get_inputs()):
        raise UnsupportedModelError(f"{onnx_path}: inputs {[i.name for i in session.get_inputs()]} are not "
                                    "input_ids / attention_mask / token_type_ids")
    theirs = session.run(None, feeds)
    ours = engine.run({k: v for k, v in feeds_all.items() if k in feeds or k == "input_ids"})
    worst, compared = 0.0, 0
    keep = mask.astype(bool)
    for name, value in ours.items():
        # Outputs are matched by shape; of several same-shaped ones (start and end logits), the closest.
        diffs = []
        for t in theirs:
            if t.shape != value.shape:
                continue
            diff = np.abs(value - t)
            if value.ndim >= 2 and value.shape[:2] == mask.shape:
                diff = diff[keep]  # padded positions are not compared
            diffs.append(float(diff.max()))
        if diffs:
            worst = max(worst, min(diffs))
            compared += 1
    if not compared:
        raise UnsupportedModelError(f"{onnx_path}: no ONNX output has the shape of any sparsebert output")
    if worst > atol:
        raise UnsupportedModelError(f"{onnx_path}: the imported model differs from ONNX Runtime by {worst:.3g} "
                                    f"(> {atol}); the graph is not the encoder sparsebert runs")
    return worst
