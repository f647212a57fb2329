"""Which operators an ONNX encoder graph may hold (convert/onnx_import.py reads its weights).

The ops the exporters write for a BERT-family encoder are accepted anywhere (``SUPPORTED_OPS``); a few more only
in the one pattern the encoder's attention writes them in (``PATTERN_OPS``):

* ``IsNaN``, as the guard of an attention softmax, ``Where(IsNaN(p), 0, p)`` with ``p = Softmax(...)``.
  transformers 5 runs attention through ``scaled_dot_product_attention`` (SDPA, its default) with a boolean
  mask, which torch's ONNX export (opset 14 on) writes as ``Where(mask, 0, -inf)`` added to the scores, the
  softmax, then that guard: a row whose keys are all masked out is 0 / 0 in ONNX and zeros in torch. A row with
  a key left, every row sparsebert's outputs are compared on, has no NaN, so the guard passes it unchanged.

Operator-oriented quantized graphs (MatMulInteger, QLinearMatMul, ...) are refused, pointing to the QDQ format;
every other op, and a pattern op outside its pattern, is refused naming the node and its op.
"""

from __future__ import annotations

from typing import Any, Callable

from ..errors import UnsupportedModelError

# What the exporters emit for these encoders (opset 11-19; LayerNorm fused or decomposed, GELU erf or tanh).
SUPPORTED_OPS = {
    "QuantizeLinear", "DequantizeLinear",
    "Add", "And", "Cast", "Concat", "Constant", "ConstantOfShape", "Div", "Equal", "Erf", "Expand", "Flatten",
    "Gather", "Gemm", "Greater", "GreaterOrEqual", "Identity", "LayerNormalization", "Less", "MatMul", "Mul",
    "Neg", "Not", "Pow", "Range", "ReduceMean", "Reshape", "Shape", "Slice", "Softmax", "Sqrt", "Squeeze", "Sub",
    "Tanh", "Transpose", "Unsqueeze", "Where", "Relu", "CumSum", "Min", "Max", "Sigmoid", "Split",
}
QUANTIZED_OPS = {"MatMulInteger", "QLinearMatMul", "DynamicQuantizeLinear", "ConvInteger", "QAttention",
                 "QLinearAdd", "QLinearMul", "QGemm", "DynamicQuantizeMatMul", "MatMulIntegerToFloat"}


class _Graph:
    """Who writes and who reads each tensor, and the graph's constants, read through activation
    QuantizeLinear -> DequantizeLinear pairs (a QDQ graph quantizes the softmax's output)."""

    def __init__(self, graph: Any):
        self.producer = {out: node for node in graph.node for out in node.output}
        self.readers: dict[str, list[Any]] = {}
        for node in graph.node:
            for name in node.input:
                self.readers.setdefault(name, []).append(node)
        self.outputs = {o.name for o in graph.output}
        self.initializers = {init.name: init for init in graph.initializer}

    def source(self, name: str) -> str:
        """The tensor ``name`` is a Quantize -> Dequantize round trip of, or ``name`` itself."""
        while True:
            dq = self.producer.get(name)
            q = self.producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is None or q.op_type != "QuantizeLinear":
                return name
            name = q.input[0]

    def is_zero(self, name: str) -> bool:
        """Whether the tensor is a constant (initializer or Constant node) of zeros."""
        from onnx import numpy_helper

        node = self.producer.get(name)
        if name in self.initializers:
            value = numpy_helper.to_array(self.initializers[name])
        elif node is not None and node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            value = numpy_helper.to_array(node.attribute[0].t)
        else:
            return False
        return value.size > 0 and not value.any()


def _softmax_nan_guard(node: Any, graph: _Graph) -> bool:
    """``IsNaN(p)``, ``p`` a Softmax's output, read only by ``Where(IsNaN(p), 0, p)``."""
    probs = graph.source(node.input[0])
    softmax = graph.producer.get(probs)
    readers = graph.readers.get(node.output[0], [])
    return (softmax is not None and softmax.op_type == "Softmax" and bool(readers)
            and node.output[0] not in graph.outputs
            and all(w.op_type == "Where" and len(w.input) == 3 and w.input[0] == node.output[0]
                    and graph.is_zero(w.input[1]) and graph.source(w.input[2]) == probs for w in readers))


# Ops accepted only where the predicate holds, and what the refusal says they are for.
PATTERN_OPS: dict[str, tuple[Callable[[Any, _Graph], bool], str]] = {
    "IsNaN": (_softmax_nan_guard, "accepted only as an attention softmax's NaN guard, Where(IsNaN(p), 0, p)"),
}


def check_ops(graph: Any, path: str) -> None:
    """Raises UnsupportedModelError naming the nodes whose ops are not the encoder's (the first ten)."""
    quantized = [f"{n.name or '?'} ({n.op_type})" for n in graph.node if n.op_type in QUANTIZED_OPS]
    if quantized:
        raise UnsupportedModelError(f"{path} is an operator-oriented quantized graph whose integer ops sparsebert "
                                    f"does not read ({', '.join(quantized[:5])}); quantize it in the QDQ format "
                                    "(QuantizeLinear / DequantizeLinear) or export the float model")
    view = _Graph(graph) if any(n.op_type in PATTERN_OPS for n in graph.node) else None
    unknown = []
    for node in graph.node:
        if node.op_type in PATTERN_OPS:
            accepted, role = PATTERN_OPS[node.op_type]
            if not accepted(node, view):
                unknown.append(f"{node.name or '?'} ({node.op_type}, {role})")
        elif node.op_type not in SUPPORTED_OPS:
            unknown.append(f"{node.name or '?'} ({node.op_type})")
    if unknown:
        raise UnsupportedModelError(f"{path}: nodes with ops a BERT-family encoder does not have: "
                                    f"{', '.join(unknown[:10])}" + (" ..." if len(unknown) > 10 else ""))
