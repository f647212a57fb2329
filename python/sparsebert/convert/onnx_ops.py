"""Which operators an ONNX encoder graph may hold (convert/onnx_import.py reads its weights).

Operator-oriented quantized graphs (MatMulInteger, QLinearMatMul, ...) are refused, pointing to the QDQ format;
every other op the encoder does not have is refused naming the node and its op.
"""

from __future__ import annotations

from typing import Any

from ..errors import UnsupportedModelError

# What the exporters emit for these encoders (opset 11-17+; LayerNorm fused or decomposed, GELU erf or tanh).
SUPPORTED_OPS = {
    "QuantizeLinear", "DequantizeLinear",
    "Add", "And", "Cast", "Concat", "Constant", "ConstantOfShape", "Div", "Equal", "Erf", "Expand", "Flatten",
    "Gather", "Gemm", "Greater", "GreaterOrEqual", "Identity", "LayerNormalization", "Less", "MatMul", "Mul",
    "Neg", "Not", "Pow", "Range", "ReduceMean", "Reshape", "Shape", "Slice", "Softmax", "Sqrt", "Squeeze", "Sub",
    "Tanh", "Transpose", "Unsqueeze", "Where", "Relu", "CumSum", "Min", "Max", "Sigmoid", "Split",
}
QUANTIZED_OPS = {"MatMulInteger", "QLinearMatMul", "DynamicQuantizeLinear", "ConvInteger", "QAttention",
                 "QLinearAdd", "QLinearMul", "QGemm", "DynamicQuantizeMatMul", "MatMulIntegerToFloat"}


def check_ops(graph: Any, path: str) -> None:
    """Raises UnsupportedModelError naming the nodes whose ops are not the encoder's (the first ten)."""
    quantized = [f"{n.name or '?'} ({n.op_type})" for n in graph.node if n.op_type in QUANTIZED_OPS]
    if quantized:
        raise UnsupportedModelError(f"{path} is an operator-oriented quantized graph whose integer ops sparsebert "
                                    f"does not read ({', '.join(quantized[:5])}); quantize it in the QDQ format "
                                    "(QuantizeLinear / DequantizeLinear) or export the float model")
    unknown = [f"{n.name or '?'} ({n.op_type})" for n in graph.node if n.op_type not in SUPPORTED_OPS]
    if unknown:
        raise UnsupportedModelError(f"{path}: nodes with ops a BERT-family encoder does not have: "
                                    f"{', '.join(unknown[:10])}" + (" ..." if len(unknown) > 10 else ""))
