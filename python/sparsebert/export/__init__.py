"""Export transformers BERT checkpoints to packed ``.sbert`` files.

Importing this package costs only numpy: torch, transformers and safetensors are
imported inside the loaders that need them.
"""

from .exporter import export
from .report import ExportReport, LinearRow

__all__ = ["ExportReport", "LinearRow", "export"]
