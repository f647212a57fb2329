"""Analyse a weight matrix, choose its packed layout and build the float layouts' arrays.

Two passes, as in XNNPACK's sparse operators: ``analyze`` measures, ``choose_layout``
decides, ``pack_arrays`` builds the arrays described in ``format/layouts.py`` for the
float layouts (dense, unstructured, block4). int8 weights are built on the block4
arrays by quantization.py; pack.py packs any layout. The limits (K a sparse layout's uint16
indices can address) are the engine's, read from ``_core``; ``_native.to_packed_linear``
builds the extension's objects from these arrays.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .._native import core
from ..format.layouts import BLOCK, LAYOUTS, MAX_STORED

# Below this sparsity the index overhead and the scattered loads of a sparse kernel
# cost more than the skipped multiply-adds save; the dense GEMM wins.
DENSE_BELOW = 0.5
# From this fill on, a 4-block layout stores at most 1/3 padding zeros, and one index
# per 4 weights plus 4-wide vector loads beat the unstructured kernel's per-weight index.
BLOCK4_MIN_FILL = 0.75
FLOAT_LAYOUTS = ("dense", "unstructured", "block4")  # what pack_arrays builds; block4_int8 is quantized

_F32, _I32, _U16 = 4, 4, 2  # bytes per stored element


def _as_matrix(weight: Any) -> np.ndarray:
    weight = np.asarray(weight)
    if weight.ndim != 2:
        raise ValueError(f"weight must be 2-D [out_features, in_features], got shape {weight.shape}")
    return weight


def _nonzero_blocks(weight: np.ndarray) -> np.ndarray:
    """Boolean [N, ceil(K/4)]: which aligned 4-blocks along the input dim hold any nonzero."""
    n_rows, n_cols = weight.shape
    nonzero = weight != 0
    tail = -n_cols % BLOCK
    if tail:
        nonzero = np.pad(nonzero, ((0, 0), (0, tail)))
    return nonzero.reshape(n_rows, -1, BLOCK).any(axis=2)


def analyze(weight: Any) -> dict[str, Any]:
    """Sparsity statistics of a [N, K] weight and the bytes each layout would take (without bias)."""
    weight = _as_matrix(weight)
    n_rows, n_cols = weight.shape
    size = n_rows * n_cols
    nnz = int(np.count_nonzero(weight))
    blocks = int(np.count_nonzero(_nonzero_blocks(weight))) if size else 0
    return {
        "shape": [n_rows, n_cols],
        "size": size,
        "nnz": nnz,
        "sparsity": 1.0 - nnz / size if size else 0.0,
        "nonzero_blocks": blocks,
        # An all-zero matrix has no blocks to fill; 0 keeps it off the block4 path.
        "block_fill": nnz / (BLOCK * blocks) if blocks else 0.0,
        "nbytes": {
            "dense": size * _F32,
            "unstructured": (n_rows + 1) * _I32 + nnz * (_U16 + _F32),
            "block4": (n_rows + 1) * _I32 + blocks * (_U16 + BLOCK * _F32),
        },
    }


def choose_layout(stats: Mapping[str, Any], dense_below: float = DENSE_BELOW) -> str:
    """Pick "dense", "block4" or "unstructured" for weights described by ``analyze``."""
    if not 0.0 <= dense_below <= 1.0:
        raise ValueError(f"dense_below must be in [0, 1], got {dense_below}")
    if stats["sparsity"] < dense_below or stats["shape"][1] > core().MAX_SPARSE_COLS:
        return "dense"
    if stats["block_fill"] >= BLOCK4_MIN_FILL:
        return "block4"
    return "unstructured"


def pack_arrays(weight: Any, layout: str) -> dict[str, np.ndarray]:
    """The on-disk arrays of ``weight`` (float32 [N, K]) in a float ``layout`` (FLOAT_LAYOUTS); the bias is stored
    separately. block4_int8 arrays are quantized weights: ``pack.pack_linear`` builds them."""
    weight = np.ascontiguousarray(_as_matrix(weight), dtype=np.float32)
    n_rows, n_cols = weight.shape
    if layout == "dense":
        return {"weight": weight}
    if layout not in FLOAT_LAYOUTS:
        if layout in LAYOUTS:
            raise ValueError(f"the {layout} layout holds quantized weights: build it with pack.pack_linear")
        raise ValueError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    check_sparse_width(layout, n_cols)
    if layout == "unstructured":
        nonzero = weight != 0
        counts = nonzero.sum(axis=1)
        _check_stored(int(counts.sum()))
        # np.nonzero walks row-major, so columns come out increasing within each row.
        return {
            "row_ptr": _pointers(counts),
            "col_idx": np.nonzero(nonzero)[1].astype(np.uint16),
            "values": weight[nonzero],
        }
    # block4
    tail = -n_cols % BLOCK
    padded = np.pad(weight, ((0, 0), (0, tail))) if tail else weight
    blocks = padded.reshape(n_rows, -1, BLOCK)
    present = (blocks != 0).any(axis=2)
    counts = present.sum(axis=1)
    _check_stored(int(counts.sum()))
    return {
        "block_ptr": _pointers(counts),
        "block_col": np.nonzero(present)[1].astype(np.uint16),
        "block_values": np.ascontiguousarray(blocks[present]),
    }


def check_sparse_width(layout: str, n_cols: int) -> None:
    """ValueError unless a sparse ``layout`` can index ``n_cols`` input columns."""
    if n_cols > core().MAX_SPARSE_COLS:
        raise ValueError(
            f"{layout} layout stores uint16 column indices, so K must be <= {core().MAX_SPARSE_COLS} "
            f"(got {n_cols}); use the dense layout"
        )


def _check_stored(count: int) -> None:
    if count > MAX_STORED:
        raise ValueError(f"{count} stored entries overflow the int32 pointers of a sparse layout")


def _pointers(counts: np.ndarray) -> np.ndarray:
    ptr = np.zeros(counts.shape[0] + 1, dtype=np.int32)
    np.cumsum(counts, out=ptr[1:])
    return ptr


def stored_nbytes(arrays: Mapping[str, np.ndarray], bias: np.ndarray | None = None) -> int:
    """Bytes the packed arrays (and the bias) take on disk."""
    return sum(a.nbytes for a in arrays.values()) + (0 if bias is None else bias.nbytes)
