"""sparsebert.convert.packing and pack: statistics, layout choice and the packed arrays (pure numpy)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparsebert import _native
from sparsebert.convert import packing
from sparsebert.convert.pack import pack_linear
from sparsebert.convert.quantization import quantize_weight_int8


# ------------------------------------------------------------------------------------------------------------
# Independent unpackers (straight from the layout description in ARCHITECTURE.md)
# ------------------------------------------------------------------------------------------------------------


def unpack(arrays: dict, layout: str, shape) -> np.ndarray:
    n, k = shape
    if layout == "dense":
        w = arrays["weight"]
        assert w.dtype == np.float32 and w.shape == (n, k)
        return w.copy()
    out = np.zeros((n, -(-k // 4) * 4), np.float32)
    if layout == "unstructured":
        ptr, idx, val = arrays["row_ptr"], arrays["col_idx"], arrays["values"]
        assert (ptr.dtype, idx.dtype, val.dtype) == (np.int32, np.uint16, np.float32)
        assert ptr.shape == (n + 1,) and idx.shape == val.shape == (int(ptr[-1]),)
        for i in range(n):
            cols = idx[ptr[i] : ptr[i + 1]].astype(np.int64)
            assert np.all(np.diff(cols) > 0), f"row {i}: columns not strictly increasing"
            assert np.all(cols < k)
            out[i, cols] = val[ptr[i] : ptr[i + 1]]
    elif layout == "block4":
        ptr, bcol, bval = arrays["block_ptr"], arrays["block_col"], arrays["block_values"]
        assert (ptr.dtype, bcol.dtype, bval.dtype) == (np.int32, np.uint16, np.float32)
        assert ptr.shape == (n + 1,) and bcol.shape == (int(ptr[-1]),) and bval.shape == (int(ptr[-1]), 4)
        for i in range(n):
            cols = bcol[ptr[i] : ptr[i + 1]].astype(np.int64)
            assert np.all(np.diff(cols) > 0), f"row {i}: blocks not strictly increasing"
            assert np.all(cols < -(-k // 4))
            for j, kb in enumerate(cols):
                out[i, 4 * kb : 4 * kb + 4] = bval[ptr[i] + j]
        # Lanes past K of a partial last block are zero.
        assert not out[:, k:].any(), "non-zero weight stored past K"
    else:
        raise AssertionError(layout)
    assert np.all(np.diff(ptr) >= 0) and ptr[0] == 0
    return out[:, :k]


@st.composite
def sparse_matrices(draw):
    n = draw(st.integers(1, 12))
    k = draw(st.integers(1, 37))
    block = draw(st.sampled_from([1, 4]))
    density = draw(st.sampled_from([0.0, 0.05, 0.3, 0.7, 1.0]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    kb = -(-k // block)
    keep = rng.random((n, kb)) < density
    mask = np.repeat(keep, block, axis=1)[:, :k]
    w = rng.standard_normal((n, k)).astype(np.float32)
    # Exact zeros inside kept blocks too (a kept 4-block need not be full).
    w[rng.random((n, k)) < 0.1] = 0.0
    return (w * mask).astype(np.float32)


@pytest.mark.parametrize("layout", ["dense", "unstructured", "block4"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(w=sparse_matrices())
def test_pack_arrays_round_trip(layout, w):
    arrays = packing.pack_arrays(w, layout)
    back = unpack(arrays, layout, w.shape)
    np.testing.assert_array_equal(back, w)
    if layout == "unstructured":
        assert arrays["values"].size == np.count_nonzero(w)
        assert np.all(arrays["values"] != 0)
    if layout == "block4":
        # Only blocks with a nonzero are stored.
        assert np.all(arrays["block_values"].any(axis=1))


def test_pack_arrays_converts_dtype_and_order():
    w = np.asfortranarray(np.array([[0.0, 1.5, 0.0, 0.0, 2.0], [0.0, 0.0, 0.0, 0.0, 0.0]], np.float64))
    for layout in ("dense", "unstructured", "block4"):
        arrays = packing.pack_arrays(w, layout)
        np.testing.assert_array_equal(unpack(arrays, layout, w.shape), w.astype(np.float32))
        for a in arrays.values():
            assert a.flags.c_contiguous


def test_pack_arrays_exact_contents():
    w = np.zeros((3, 10), np.float32)
    w[0, [1, 9]] = [1.0, 2.0]
    w[2, [0, 3, 4]] = [3.0, 4.0, 5.0]
    u = packing.pack_arrays(w, "unstructured")
    np.testing.assert_array_equal(u["row_ptr"], [0, 2, 2, 5])
    np.testing.assert_array_equal(u["col_idx"], [1, 9, 0, 3, 4])
    np.testing.assert_array_equal(u["values"], [1, 2, 3, 4, 5])
    b = packing.pack_arrays(w, "block4")
    np.testing.assert_array_equal(b["block_ptr"], [0, 2, 2, 4])
    np.testing.assert_array_equal(b["block_col"], [0, 2, 0, 1])
    np.testing.assert_array_equal(
        b["block_values"], [[0, 1, 0, 0], [0, 2, 0, 0], [3, 0, 0, 4], [5, 0, 0, 0]]
    )


def test_pack_arrays_rejects():
    with pytest.raises(ValueError):
        packing.pack_arrays(np.zeros(4, np.float32), "dense")
    with pytest.raises(ValueError, match="csc"):
        packing.pack_arrays(np.zeros((2, 2), np.float32), "csc")
    # uint16 column indices: sparse layouts cannot address more than 65535 inputs.
    wide = np.zeros((1, 65536), np.float32)
    wide[0, -1] = 1.0
    for layout in ("unstructured", "block4"):
        with pytest.raises(ValueError, match="65535"):
            packing.pack_arrays(wide, layout)
    np.testing.assert_array_equal(packing.pack_arrays(wide, "dense")["weight"], wide)
    # int8 weights are quantized, not packed as they are: pack.pack_linear builds them.
    with pytest.raises(ValueError, match="pack_linear"):
        packing.pack_arrays(np.ones((2, 4), np.float32), "block4_int8")


def test_pack_linear_every_layout():
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((6, 18)) * (rng.random((6, 18)) < 0.4)).astype(np.float32)
    stats = packing.analyze(w)
    for layout in packing.FLOAT_LAYOUTS:
        packed = pack_linear(w, layout)
        np.testing.assert_array_equal(unpack(packed.arrays, layout, w.shape), w)
        assert packed.stats == stats and packed.block_fill == stats["block_fill"] and packed.weight_error is None
    q = quantize_weight_int8(w)
    packed = pack_linear(w, "block4_int8")
    assert sorted(packed.arrays) == ["block_col", "block_ptr", "block_values", "scales"]
    for name, array in packed.arrays.items():
        np.testing.assert_array_equal(array, q[name])
    assert (packed.block_fill, packed.weight_error) == (q["block_fill"], q["relative_error"])
    # A quantized checkpoint's scales reach the int8 grid; float layouts take none.
    scales = np.full(6, np.nan, np.float32)
    scales[0] = 0.5
    w[0] = np.round(w[0] / 0.5) * 0.5
    assert pack_linear(w, "block4_int8", scales).arrays["scales"][0] == 0.5
    with pytest.raises(ValueError, match="scales"):
        pack_linear(w, "block4", scales)
    with pytest.raises(ValueError, match="65535"):
        pack_linear(np.ones((1, 65536), np.float32), "block4_int8")


def test_pack_arrays_largest_sparse_k():
    k = 65535
    w = np.zeros((2, k), np.float32)
    w[0, k - 1] = 1.0
    w[1, 0] = -2.0
    for layout in ("unstructured", "block4"):
        np.testing.assert_array_equal(unpack(packing.pack_arrays(w, layout), layout, w.shape), w)


# ------------------------------------------------------------------------------------------------------------
# analyze / choose_layout
# ------------------------------------------------------------------------------------------------------------


def test_analyze_counts():
    w = np.zeros((4, 10), np.float32)
    w[1, [0, 7]] = 1.0
    w[2, [3, 9]] = 1.0
    w[3, [4, 5]] = 1.0
    stats = packing.analyze(w)
    assert stats["nnz"] == 6
    assert stats["sparsity"] == pytest.approx(1 - 6 / 40)
    assert stats["nonzero_blocks"] == 5
    assert stats["block_fill"] == pytest.approx(6 / 20)
    assert list(stats["shape"]) == [4, 10]
    nbytes = stats["nbytes"]
    assert nbytes["dense"] == 40 * 4
    assert nbytes["unstructured"] == 5 * 4 + 6 * (2 + 4)
    assert nbytes["block4"] == 5 * 4 + 5 * (2 + 16)
    for layout in ("dense", "unstructured", "block4"):
        assert nbytes[layout] == packing.stored_nbytes(packing.pack_arrays(w, layout))


def test_analyze_edge_cases():
    zero = packing.analyze(np.zeros((3, 5), np.float32))
    assert zero["sparsity"] == 1.0 and zero["nnz"] == 0
    assert 0.0 <= zero["block_fill"] <= 1.0
    full = packing.analyze(np.ones((3, 8), np.float32))
    assert full["sparsity"] == 0.0 and full["block_fill"] == 1.0
    with pytest.raises(ValueError):
        packing.analyze(np.zeros((2, 2, 2), np.float32))


def _row(n_nonzero, k=16, pattern="spread"):
    """A 1 x k row with n_nonzero nonzeros, packed into as few ("packed") or as many ("spread") 4-blocks."""
    w = np.zeros((1, k), np.float32)
    if pattern == "packed":
        w[0, :n_nonzero] = 1.0
    else:
        order = np.concatenate([np.arange(b, k, 4) for b in range(4)])
        w[0, order[:n_nonzero]] = 1.0
    return w


def test_dense_below_threshold_is_the_named_constant():
    t = packing.DENSE_BELOW
    assert t == 0.5
    k = 64
    n_zero_at = int(round(t * k))
    at = _row(k - n_zero_at, k, "packed")  # sparsity exactly DENSE_BELOW -> sparse
    below = _row(k - n_zero_at + 1, k, "packed")  # one more nonzero -> dense
    assert packing.analyze(at)["sparsity"] == pytest.approx(t)
    assert packing.choose_layout(packing.analyze(at)) != "dense"
    assert packing.choose_layout(packing.analyze(below)) == "dense"
    assert packing.choose_layout(packing.analyze(np.ones((4, 4), np.float32))) == "dense"
    # The threshold is a parameter.
    stats = packing.analyze(_row(8, 64, "spread"))  # 87.5% sparse
    assert packing.choose_layout(stats, dense_below=0.9) == "dense"
    assert packing.choose_layout(stats, dense_below=0.875) != "dense"
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError):
            packing.choose_layout(stats, dense_below=bad)


def test_block4_fill_threshold_is_the_named_constant():
    fill = packing.BLOCK4_MIN_FILL
    assert fill == 0.75
    # 3 of 4 lanes used in every stored block: fill exactly 0.75 -> block4.
    w = np.zeros((1, 64), np.float32)
    for kb in range(4):
        w[0, 4 * kb : 4 * kb + 3] = 1.0
    stats = packing.analyze(w)
    assert stats["block_fill"] == pytest.approx(fill)
    assert packing.choose_layout(stats) == "block4"
    # one lane fewer somewhere -> below the threshold -> unstructured
    w[0, 2] = 0.0
    stats = packing.analyze(w)
    assert stats["block_fill"] < fill
    assert packing.choose_layout(stats) == "unstructured"
    # Fully scattered nonzeros (one per block) are unstructured; whole blocks are block4.
    assert packing.choose_layout(packing.analyze(_row(8, 64, "spread"))) == "unstructured"
    assert packing.choose_layout(packing.analyze(_row(8, 64, "packed"))) == "block4"


def test_all_zero_matrix_is_not_block4():
    assert packing.choose_layout(packing.analyze(np.zeros((8, 8), np.float32))) == "unstructured"


def test_wide_matrices_stay_dense():
    w = np.zeros((1, 65536), np.float32)
    w[0, 5] = 1.0
    assert packing.choose_layout(packing.analyze(w)) == "dense"


def test_pack_auto_follows_choose_layout():
    from sparsebert.kernels import pack

    rng = np.random.default_rng(0)
    cases = [
        rng.standard_normal((16, 24)).astype(np.float32),
        _row(8, 64, "spread"),
        _row(8, 64, "packed"),
        (rng.standard_normal((16, 24)) * (rng.random((16, 24)) < 0.2)).astype(np.float32),
        np.zeros((5, 7), np.float32),
    ]
    seen = set()
    for w in cases:
        expected = packing.choose_layout(packing.analyze(w))
        assert pack(w).layout == expected
        assert pack(w, layout="auto").layout == expected
        seen.add(expected)
    assert seen == {"dense", "unstructured", "block4"}


@pytest.mark.parametrize("layout", ["dense", "unstructured", "block4"])
def test_to_packed_linear_round_trip(layout):
    rng = np.random.default_rng(1)
    w = (rng.standard_normal((13, 22)) * (rng.random((13, 22)) < 0.3)).astype(np.float32)
    b = rng.standard_normal(13).astype(np.float32)
    p = _native.to_packed_linear(layout, packing.pack_arrays(w, layout), b, shape=w.shape)
    assert (p.layout, p.rows, p.cols) == (layout, 13, 22)
    y = p.matmul(np.eye(22, dtype=np.float32))
    np.testing.assert_array_equal(y, w + b[:, None])
