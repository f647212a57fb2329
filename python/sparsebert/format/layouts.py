"""The packed weight layouts stored in a ``.sbert`` file (part of ``LAYOUT_REVISION``).

A packed linear layer ``P`` of shape ``[N, K]`` (``Y = W X + b``) is stored as the
tensors ``P.bias`` (float32 ``[N]``) plus, by layout::

    dense         P.weight        float32 [N, K]      row-major
    unstructured  P.row_ptr       int32   [N + 1]     CSR row starts, row_ptr[0] == 0, non-decreasing
                  P.col_idx       uint16  [nnz]       input index k, strictly increasing within a row
                  P.values        float32 [nnz]
    block4        P.block_ptr     int32   [N + 1]     like row_ptr, counting blocks
                  P.block_col     uint16  [nb]        block index kb, covering inputs 4kb .. 4kb+3,
                                                      strictly increasing within a row
                  P.block_values  float32 [nb, 4]     zero where a block runs past K
    block4_int8   P.block_ptr, P.block_col        as block4
                  P.block_values  int8    [nb, 4]     s8 weights, zero where a block runs past K
                  P.scales        float32 [N]         row r's weights are scales[r] * block_values (>= 0)

block4_int8 came with layout revision 2; K is at most ``_core.INT8_MAX_COLS`` (32768) for it (the kernels'
int32 sums stay exact).  Indices are uint16 to halve the index stream of the sparse kernels, which is why
sparse layouts are limited to K <= ``_core.MAX_SPARSE_COLS`` (65535).  Files keep plain CSR row order; the
C++ side may reorder rows for load balance after loading.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .._native import core

LAYOUTS = ("dense", "unstructured", "block4", "block4_int8")
BLOCK = 4
MAX_STORED = 2**31 - 1  # pointers are int32

# suffix -> dtype name, per layout (the bias is common to all layouts)
LAYOUT_ARRAYS: dict[str, dict[str, str]] = {
    "dense": {"weight": "float32"},
    "unstructured": {"row_ptr": "int32", "col_idx": "uint16", "values": "float32"},
    "block4": {"block_ptr": "int32", "block_col": "uint16", "block_values": "float32"},
    "block4_int8": {"block_ptr": "int32", "block_col": "uint16", "block_values": "int8", "scales": "float32"},
}
BIAS = "bias"


def array_suffixes(layout: str) -> tuple[str, ...]:
    """Names (after ``P.``) of every tensor stored for a linear with this layout, bias last."""
    return (*LAYOUT_ARRAYS[layout], BIAS)


def expected_array_shapes(layout: str, n_rows: int, n_cols: int, stored: int) -> dict[str, tuple[int, ...]]:
    """Shapes of a linear's tensors; ``stored`` is nnz (unstructured) or the block count (block4)."""
    if layout == "dense":
        shapes = {"weight": (n_rows, n_cols)}
    elif layout == "unstructured":
        shapes = {"row_ptr": (n_rows + 1,), "col_idx": (stored,), "values": (stored,)}
    elif layout in ("block4", "block4_int8"):
        shapes = {"block_ptr": (n_rows + 1,), "block_col": (stored,), "block_values": (stored, BLOCK)}
        if layout == "block4_int8":
            shapes["scales"] = (n_rows,)
    else:
        raise ValueError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    shapes[BIAS] = (n_rows,)
    return shapes


def stored_count_array(layout: str) -> str | None:
    """The array whose length gives the number of stored entries (None for dense)."""
    return {"dense": None, "unstructured": "col_idx", "block4": "block_col", "block4_int8": "block_col"}[layout]


def check_linear_arrays(layout: str, n_rows: int, n_cols: int, arrays: Mapping[str, np.ndarray]) -> None:
    """Check the index invariants of one packed linear (pointers, indices in range and strictly increasing per
    row, zeros past K, int8 scales, K within the layout's limit); ValueError naming the first violation. The rules
    are the C++ constructors' own (csrc/ops/packed_arrays.h), run here before any array is packed, so that a
    corrupt file is refused with its name and the layer's."""
    core().check_packed_arrays(layout, int(n_rows), int(n_cols), dict(arrays))


def check_model_linears(linears: Mapping[str, Mapping], tensors: Mapping[str, np.ndarray]) -> None:
    """Checks the packed arrays of every linear in a header's ``linears`` table against its layout and shape;
    ValueError naming the first linear that does not fit. Shared by the writer and the reader."""
    for name, meta in linears.items():
        n_rows, n_cols = meta["shape"]
        arrays = {s: tensors[f"{name}.{s}"] for s in array_suffixes(meta["layout"])}
        try:
            check_linear_arrays(meta["layout"], n_rows, n_cols, arrays)
        except ValueError as exc:
            raise ValueError(f"linear {name!r} ({meta['layout']}): {exc}") from None
