"""The ``.sbert`` packed model file: spec (byte layout, versions, checks), writer and reader."""

from .layouts import LAYOUTS
from .reader import PackedModel, read_model
from .spec import ALIGNMENT, FORMAT_VERSION, LAYOUT_REVISION, MAGIC
from .writer import write_model

__all__ = [
    "ALIGNMENT",
    "FORMAT_VERSION",
    "LAYOUTS",
    "LAYOUT_REVISION",
    "MAGIC",
    "PackedModel",
    "read_model",
    "write_model",
]
