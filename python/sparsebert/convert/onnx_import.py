"""Read a BERT / RoBERTa / DistilBERT encoder from an ONNX file as ``torch.onnx.export`` and Optimum write it.

The graph is recognised by its structure, not by initializer names (the exporters rename weights they fold or
deduplicate): every node carries the scope of the module that emitted it (``/bert/encoder/layer.0/attention/
self/query/MatMul``), so a MatMul or Gemm with a constant weight, the Add of its bias, a LayerNormalization's
scale and bias, and an embedding Gather's table give back the ``transformers`` parameter names. The
transformers ``config.json`` next to the file (or ``config=``) supplies what weights cannot tell (heads,
activation). Graphs with ops the encoder does not have are refused by node name (convert/onnx_ops.py).

Quantized graphs in the QDQ format (ONNX Runtime's ``quantize_static``, QAT exports): a DequantizeLinear of a
constant is a constant, so weights come out as the values the graph computes with, and a weight whose scale is
one per output feature (per tensor or per output channel) keeps its integers and scales for ``quantize="int8"``
(the Checkpoint's ``weight_scales``, as convert/qat.py gives for torch checkpoints). QuantizeLinear ->
DequantizeLinear pairs on activations are looked through; the engine quantizes activations its own way.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..errors import UnsupportedModelError
from ..extras import require
from ..spelling import option
from ..engine import SparseEngine
from .checkpoint import ARCHITECTURES, Checkpoint, architecture_of_weights, canonical_weights, read_config_json
from .onnx_ops import check_ops
from .qat import int8_rows

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


def _constants(graph: Any, path: str = "") -> tuple[dict[str, np.ndarray], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Every constant tensor by name (initializers, Constant nodes, Identity copies, DequantizeLinear of
    constants), and for each dequantized one its integers minus zero point and its scale, both in its shape."""
    from onnx import numpy_helper

    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    grids: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for node in graph.node:  # Constant nodes and Identity copies of constants
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
        elif node.op_type == "Identity" and node.input[0] in values:
            values[node.output[0]] = values[node.input[0]]
        elif node.op_type == "DequantizeLinear" and all(i in values for i in node.input if i):
            grids[node.output[0]] = _dequantize(node, values, path)
            integers, scale = grids[node.output[0]]
            values[node.output[0]] = (integers * scale).astype(np.float32)
    return values, grids


def _dequantize(node: Any, values: dict[str, np.ndarray], path: str) -> tuple[np.ndarray, np.ndarray]:
    """(x - zero_point, scale) of a constant DequantizeLinear, both broadcast to x's shape (float64)."""
    attrs = {a.name: a.i for a in node.attribute}
    if attrs.get("block_size"):
        raise UnsupportedModelError(f"{path}: {node.name} ({node.op_type}) is block-quantized, which sparsebert "
                                    "does not read")
    x = values[node.input[0]].astype(np.float64)
    scale = values[node.input[1]].astype(np.float64)
    zero = values[node.input[2]].astype(np.float64) if len(node.input) > 2 and node.input[2] else np.zeros(1)
    if scale.size > 1:  # per axis: 1-D along `axis`
        axis = attrs.get("axis", 1) % max(x.ndim, 1)
        shape = [1] * x.ndim
        shape[axis] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape) if zero.size > 1 else zero
    return x - zero, np.broadcast_to(scale, x.shape)


def _row_scales(grid: tuple[np.ndarray, np.ndarray] | None, transposed: bool) -> np.ndarray | None:
    """Per-output-row scales of a dequantized weight (``transposed``: stored [K, N] as MatMul takes it), NaN for
    rows int8 cannot hold; None when its scales vary along K (no per-row grid) or it was not dequantized."""
    if grid is None or grid[0].ndim != 2:
        return None
    integers, scale = (g.T for g in grid) if transposed else grid
    if scale.size and not (scale == scale[:, :1]).all():
        return None
    rows = scale[:, 0] if scale.shape[1] else np.ones(scale.shape[0])
    if not (np.isfinite(rows).all() and (rows > 0).all()):
        return None
    return int8_rows(integers, rows.astype(np.float32))


def graph_weights(graph: Any, path: str) -> tuple[dict[str, np.ndarray], float | None, dict[str, np.ndarray]]:
    """The ``transformers`` state dict the graph's constants make up, LayerNormalization's epsilon, and the
    per-row scales of weights the graph dequantizes (QDQ)."""
    values, grids = _constants(graph, path)
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    weights: dict[str, np.ndarray] = {}
    scales: dict[str, np.ndarray] = {}
    eps = None

    def put(name: str, value: np.ndarray) -> None:
        if name in weights and not np.array_equal(weights[name], value):
            raise UnsupportedModelError(f"{path}: two different constants for {name}")
        weights[name] = np.ascontiguousarray(value, dtype=np.float32)

    def put_scales(name: str, grid_name: str, transposed: bool) -> None:
        rows = _row_scales(grids.get(grid_name), transposed)
        if rows is not None:
            scales[name] = rows

    def users(name: str):
        """The nodes that read a tensor, looking through activation QuantizeLinear -> DequantizeLinear pairs."""
        for user in consumers.get(name, []):
            if user.op_type == "QuantizeLinear":
                for dq in consumers.get(user.output[0], []):
                    if dq.op_type == "DequantizeLinear":
                        yield from users(dq.output[0])
            else:
                yield user

    for node in graph.node:
        module = _module_of(node.name)
        if module is None or node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if node.op_type == "MatMul" and node.input[1] in values and values[node.input[1]].ndim == 2:
            put(f"{module}.weight", values[node.input[1]].T)
            put_scales(f"{module}.weight", node.input[1], transposed=True)
            bias_add = [c for c in users(node.output[0]) if c.op_type == "Add" and _module_of(c.name) == module]
            for add in bias_add:
                constant = [values[i] for i in add.input if i in values and values[i].ndim == 1]
                if constant:
                    put(f"{module}.bias", constant[0])
        elif node.op_type == "Gemm" and node.input[1] in values:
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            w = values[node.input[1]]
            put(f"{module}.weight", w if trans_b else w.T)
            put_scales(f"{module}.weight", node.input[1], transposed=not trans_b)
            if len(node.input) > 2 and node.input[2] in values:
                put(f"{module}.bias", values[node.input[2]])
        elif node.op_type == "LayerNormalization":
            if node.input[1] not in values:  # computed in the graph: not a weight the file can hold
                raise UnsupportedModelError(f"{path}: {node.name} (LayerNormalization): its scale is not a constant")
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
    return weights, eps, scales


def load_onnx(path: str, config: Any = None) -> Checkpoint:
    """A Checkpoint (checkpoint.py) from an ONNX file and its transformers config (``config``: a dict, a
    config.json path, or None for the config.json beside the file)."""
    onnx = require("onnx", "exporting an ONNX file")
    if config is None:
        config = os.path.join(os.path.dirname(os.path.abspath(path)), "config.json")
        if not os.path.isfile(config):
            raise UnsupportedModelError(f"{path}: no config.json beside it; {option('onnx_config')}")
    if not isinstance(config, dict):
        config = read_config_json(os.fspath(config))
    try:
        model = onnx.load(path)
    except Exception as exc:  # onnx raises DecodeError and others for files that are not ONNX
        raise UnsupportedModelError(f"cannot read {path} as ONNX: {exc}") from None
    graph = model.graph
    if not any(_module_of(node.name) for node in graph.node):  # first: dynamo graphs also have foreign ops
        raise UnsupportedModelError(
            f"{path}: no node names carry module scopes (/bert/encoder/layer.0/...), so the weights cannot be "
            "told apart; the torch.export-based exporter (torch.onnx.export(dynamo=True)) writes such graphs: "
            "export with dynamo=False, or with Optimum")
    check_ops(graph, path)
    raw, eps, raw_scales = graph_weights(graph, path)
    family = config.get("model_type", "bert")
    if family not in ("bert", "roberta", "distilbert"):
        raise UnsupportedModelError(f"{path}: model_type {family!r} is not supported")
    weights, prefixed = canonical_weights(raw, family)
    names = config.get("architectures") or []
    architecture = names[0] if names and names[0] in ARCHITECTURES else architecture_of_weights(weights, family)
    config = dict(config)
    if eps is not None and family != "distilbert":
        config["layer_norm_eps"] = eps
    return Checkpoint(config, weights, family, ARCHITECTURES[architecture][1], architecture, path, prefixed,
                      canonical_weights(raw_scales, family)[0])


def without_activation_quantization(graph: Any) -> bool:
    """Removes, in place, each QuantizeLinear -> DequantizeLinear pair on a computed tensor (an activation), its
    readers reading the tensor itself; whether there was any. Weight DequantizeLinears of constants stay."""
    import onnx

    constant = {init.name for init in graph.initializer}
    constant |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    readers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    graph_outputs = {o.name for o in graph.output}
    renamed, dropped = {}, set()
    for q in graph.node:
        if q.op_type != "QuantizeLinear" or q.input[0] in constant or q.output[0] in graph_outputs:
            continue
        dqs = readers.get(q.output[0], [])
        if not dqs or any(d.op_type != "DequantizeLinear" for d in dqs):
            continue
        dropped.add(id(q))
        for d in dqs:
            dropped.add(id(d))
            renamed[d.output[0]] = q.input[0]
    if not dropped:
        return False

    def source(name: str) -> str:  # through chained pairs (Q -> DQ -> Q -> DQ)
        while name in renamed:
            name = renamed[name]
        return name

    kept = [n for n in graph.node if id(n) not in dropped]
    for node in kept:
        for i, name in enumerate(node.input):
            node.input[i] = source(name)
    for name in graph_outputs & renamed.keys():  # a graph output keeps its name
        kept.append(onnx.helper.make_node("Identity", [source(name)], [name]))
    del graph.node[:]
    graph.node.extend(kept)
    return True


def check_against_onnxruntime(onnx_path: str, sbert_path: str, atol: float = 1e-4) -> tuple[float | None, bool]:
    """Runs the ONNX file (ONNX Runtime) and the packed file (sparsebert) on the same random inputs and returns
    the largest difference over the outputs they share (None when ONNX Runtime is not installed), and whether
    the graph's activation quantization was removed for the comparison; UnsupportedModelError above ``atol``."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None, False
    import onnx

    engine = SparseEngine.load(sbert_path, num_threads=1, attention="fp32")  # checked at fp32's precision
    model = onnx.load(onnx_path)
    stripped = without_activation_quantization(model.graph)
    if stripped:
        # A QDQ graph also rounds its activations (ONNX Runtime runs that); the weights are what is checked. Only
        # basic optimisations: the extended ones turn DequantizeLinear -> MatMul into integer kernels that
        # quantize the activations again.
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    else:
        session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    del model
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
    return worst, stripped
