"""Engine tuning: choices that change speed, not what is computed. Fusing the FFN gives bitwise the same
outputs; other K-blocks or row groups only reorder the fp32 sums (differences of a few ulp).

``Tuning()`` is what the engine chooses by itself. ``Tuning.from_environment()`` reads the overrides a developer
sets while measuring, once, when a model is loaded: ``SPARSEBERT_KBLOCK`` (input columns per K-block of the sparse
layouts), ``SPARSEBERT_ROWGROUP`` (panels of 32 rows per row group; 0: one group) and ``SPARSEBERT_FUSE_FFN=0``
(FFN up and down as two ops). Nothing below the loader reads the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SPARSE_FLOAT_LAYOUTS = ("unstructured", "block4")  # the layouts whose packing takes K-blocks and row groups


@dataclass(frozen=True)
class Tuning:
    kblock_cols: int = 0  # 0: chosen per matrix from its shape and density
    group_panels: int = -1  # -1: chosen per matrix; 0: one row group
    fuse_ffn: bool = True

    def __post_init__(self) -> None:
        for name, least in (("kblock_cols", 0), ("group_panels", -1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"Tuning.{name} must be an integer >= {least}, got {value!r}")
        if not isinstance(self.fuse_ffn, bool):
            raise TypeError(f"Tuning.fuse_ffn must be True or False, got {self.fuse_ffn!r}")

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> Tuning:
        """The overrides set in ``environ`` (ValueError naming a variable whose value is not understood)."""
        values: dict[str, Any] = {}
        for variable, field, least in (("SPARSEBERT_KBLOCK", "kblock_cols", 1),
                                       ("SPARSEBERT_ROWGROUP", "group_panels", 0)):
            text = environ.get(variable, "").strip()
            if not text:
                continue
            try:
                values[field] = int(text)
            except ValueError:
                values[field] = None
            if values[field] is None or values[field] < least:
                raise ValueError(f"{variable}={text!r}: expected an integer >= {least}")
        fuse = environ.get("SPARSEBERT_FUSE_FFN", "").strip()
        if fuse:
            if fuse not in ("0", "1"):
                raise ValueError(f"SPARSEBERT_FUSE_FFN={fuse!r}: expected 0 or 1")
            values["fuse_ffn"] = fuse == "1"
        return cls(**values)

    def pack_options(self, layout: str) -> dict[str, int]:
        """Keyword arguments of the ``_core.PackedLinear`` constructor of ``layout``."""
        if layout not in SPARSE_FLOAT_LAYOUTS:
            return {}
        return {"kblock_cols": self.kblock_cols, "group_panels": self.group_panels}
