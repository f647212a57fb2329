"""Conversion: BERT-family checkpoints (transformers directories or objects, ONNX files) to packed ``.sbert``
files, and the packing and int8 quantization of weights that it and ``sparsebert.kernels`` share.

Serving never imports this package. Importing it costs only numpy: torch, transformers, safetensors and onnx
are imported inside the loaders that need them.
"""

from .exporter import export
from .report import ExportReport, LinearRow

__all__ = ["ExportReport", "LinearRow", "export"]
