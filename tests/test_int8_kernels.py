"""int8 kernels: activation quantization and the block4_int8 product, on every ISA, against exact integer
references written here from the contract in csrc/kernels/kernels.h."""

from __future__ import annotations

import numpy as np
import pytest

from sparsebert import kernels
from sparsebert import _native
from sparsebert.convert.quantization import quantize_weight_int8

_core = _native.core()
ISAS = kernels.available_isas()


# ------------------------------------------------------------------------------------------------------------
# References
# ------------------------------------------------------------------------------------------------------------


def quantize_reference(x: np.ndarray):
    """The float32 steps of QuantizeFn, in numpy (IEEE float32 arithmetic, round half to even)."""
    x = x.astype(np.float32)
    k, n = x.shape
    f32 = np.float32
    with np.errstate(all="ignore"):
        # fmin / fmax skip NaN, as the kernels' compare-and-select does.
        lo = np.fmin(np.fmin.reduce(x, axis=0), f32(0))
        hi = np.fmax(np.fmax.reduce(x, axis=0), f32(0))
        scale = ((hi - lo) / f32(255)).astype(np.float32)
        scale = np.where((scale > 0) & np.isfinite(scale), scale, f32(1)).astype(np.float32)
        inv = (f32(1) / scale).astype(np.float32)
        zero = np.nan_to_num(np.clip(np.rint((-lo) * inv), 0, 255), nan=0).astype(np.int32)
        q = np.rint(x * inv[None, :]) + zero[None, :].astype(np.float32)
        q = np.nan_to_num(np.clip(q, 0, 255), nan=0).astype(np.uint8)  # NaN -> 0
    blocks = -(-k // 4)
    padded = np.broadcast_to(zero.astype(np.uint8), (blocks * 4, n)).copy()
    padded[:k] = q
    return padded.reshape(blocks, 4, n).transpose(0, 2, 1), scale, zero


def int8_reference(q_weight: dict, n_rows: int, x: np.ndarray, bias=None):
    """Exact int64 sums over the stored s8 blocks, then the dequantization in float64: what the kernel's one
    float32 fma rounds."""
    xq, x_scale, x_zero = quantize_reference(x)
    n = x.shape[1]
    acc = np.zeros((n_rows, n), np.int64)
    wsum = np.zeros(n_rows, np.int64)
    ptr, cols, vals = q_weight["block_ptr"], q_weight["block_col"], q_weight["block_values"].astype(np.int64)
    for r in range(n_rows):
        for j in range(ptr[r], ptr[r + 1]):
            acc[r] += xq[cols[j]].astype(np.int64) @ vals[j]
            wsum[r] += vals[j].sum()
    centred = acc - x_zero[None, :].astype(np.int64) * wsum[:, None]
    s = (x_scale[None, :] * q_weight["scales"][:, None]).astype(np.float32)  # the float32 product the kernel forms
    y = centred.astype(np.float64) * s.astype(np.float64)
    if bias is not None:
        y += bias[:, None]
    return y


def sparse_weight(rng, n, k, density=0.3, block=False):
    w = rng.standard_normal((n, k)).astype(np.float32)
    if block:
        kb = -(-k // 4)
        keep = np.repeat(rng.random((n, kb)) < density, 4, axis=1)[:, :k]
        w *= keep
    else:
        w[rng.random(w.shape) >= density] = 0
    return w


# ------------------------------------------------------------------------------------------------------------
# Activation quantization
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("k, n", [(1, 1), (3, 5), (4, 16), (5, 17), (37, 64), (64, 65), (768, 130)])
def test_quantize_matches_reference_exactly(isa, k, n):
    rng = np.random.default_rng(k * 1000 + n)
    x = (rng.standard_normal((k, n)) * rng.uniform(0.01, 30, size=n)).astype(np.float32)
    x[:, n // 2] = np.abs(x[:, n // 2])  # an all-positive token: zero point 0
    x[:, -1] = -np.abs(x[:, -1])  # an all-negative token: zero point 255
    q, scale, zero = _core.Kernels(isa).quantize(x)
    rq, rscale, rzero = quantize_reference(x)
    np.testing.assert_array_equal(scale, rscale)
    np.testing.assert_array_equal(zero, rzero)
    np.testing.assert_array_equal(q, rq)
    if n > 2:
        assert zero[n // 2] == 0 and zero[-1] == 255
    # x ~= scale * (q - zero) within half a step.
    flat = q.transpose(0, 2, 1).reshape(-1, n)[:k].astype(np.float32)
    back = scale * (flat - zero)
    assert np.all(np.abs(back - x) <= 0.5 * scale * (1 + 1e-5) + 1e-30)


@pytest.mark.parametrize("isa", ISAS)
def test_quantize_special_tokens(isa):
    x = np.zeros((9, 6), np.float32)
    x[:, 1] = 3.5  # constant positive
    x[:, 2] = [1e-38, -1e-38, 0, 0, 0, 0, 0, 0, 1e-45]  # tiny values, a denormal
    x[:, 3] = [3e38, -3e38, 1, 0, 0, 0, 0, 0, 0]  # range overflows float32: scale inf -> 1
    x[:, 4] = [np.nan, 1, 2, 3, 4, 5, 6, 7, 8]
    x[:, 5] = [np.inf, -1, 0, 0, 0, 0, 0, 0, 0]
    q, scale, zero = _core.Kernels(isa).quantize(x)
    rq, rscale, rzero = quantize_reference(x)
    np.testing.assert_array_equal(scale, rscale)
    np.testing.assert_array_equal(zero, rzero)
    np.testing.assert_array_equal(q, rq)
    assert scale[0] == 1 and zero[0] == 0 and not q[:, 0].any()  # an all-zero token


# ------------------------------------------------------------------------------------------------------------
# Weight quantization
# ------------------------------------------------------------------------------------------------------------


def test_weight_quantization():
    rng = np.random.default_rng(3)
    w = sparse_weight(rng, 20, 37, density=0.25)
    w[4] = 0  # an empty row
    w[5, :4] = [1.0, -1.0, 0.5, 0.0]
    q = quantize_weight_int8(w)
    assert q["block_values"].dtype == np.int8 and q["block_values"].shape[1] == 4
    assert q["scales"][4] == 0 and q["block_ptr"][5] == q["block_ptr"][4]
    assert np.abs(q["block_values"]).max() <= 127
    # Dequantized weights within half a step of the originals, zero fill included.
    dense = np.zeros((20, 40), np.float32)
    for r in range(20):
        for j in range(q["block_ptr"][r], q["block_ptr"][r + 1]):
            c = q["block_col"][j]
            dense[r, 4 * c:4 * c + 4] = q["block_values"][j] * q["scales"][r]
    assert np.all(np.abs(dense[:, :37] - w) <= 0.5 * q["scales"][:, None] * (1 + 1e-6))
    assert not dense[:, 37:].any()
    assert q["max_abs_error"] <= 0.5 * q["scales"].max() * (1 + 1e-6)
    assert 0 < q["block_fill"] <= 1
    assert q["block_fill"] == pytest.approx(np.count_nonzero(w) / q["block_values"].size)


# ------------------------------------------------------------------------------------------------------------
# The int8 product
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("n_rows, k, n", [(1, 1, 1), (3, 5, 15), (17, 37, 16), (32, 64, 17), (31, 96, 63),
                                          (64, 768, 64), (40, 130, 65), (9, 200, 130)])
@pytest.mark.parametrize("block", [False, True], ids=["unstructured", "block4"])
def test_int8_matmul_matches_exact_reference(isa, n_rows, k, n, block):
    rng = np.random.default_rng(n_rows * 7 + k + n)
    w = sparse_weight(rng, n_rows, k, density=0.3, block=block)
    if n_rows > 2:
        w[1] = 0  # an empty row
        w[2, : min(k, 8)] = rng.standard_normal(min(k, 8))  # dense leading blocks
    bias = rng.standard_normal(n_rows).astype(np.float32)
    x = rng.standard_normal((k, n)).astype(np.float32)
    q = quantize_weight_int8(w)
    y = kernels.pack_int8(w, bias).matmul(x, isa=isa)
    expected = int8_reference(q, n_rows, x, bias)
    # One float32 fma from the exact value: half an ulp of the result (plus nothing else).
    tol = np.spacing(np.abs(expected).astype(np.float32)).astype(np.float64)
    assert np.all(np.abs(y - expected) <= tol), np.abs(y - expected).max()
    if n_rows > 2:
        np.testing.assert_array_equal(y[1], np.broadcast_to(bias[1], (n,)))


@pytest.mark.parametrize("isa", [i for i in ISAS if i != "scalar"])
@pytest.mark.parametrize("activation", ["none", "gelu", "relu"])
def test_int8_simd_equals_scalar_bitwise(isa, activation):
    rng = np.random.default_rng(11)
    w = sparse_weight(rng, 70, 300, density=0.12, block=True)
    bias = rng.standard_normal(70).astype(np.float32)
    x = (rng.standard_normal((300, 129)) * 3).astype(np.float32)
    residual = rng.standard_normal((70, 129)).astype(np.float32)
    lin = kernels.pack_int8(w, bias)
    for res in (None, residual):
        for threads in (1, 2, 3):
            ref = lin.matmul(x, activation=activation, residual=res, isa="scalar", num_threads=1)
            out = lin.matmul(x, activation=activation, residual=res, isa=isa, num_threads=threads)
            if activation == "gelu":  # the SIMD erf is a rational fit, not the scalar std::erf: not bitwise
                np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)
                np.testing.assert_array_equal(
                    lin.matmul(x, residual=res, isa=isa, num_threads=threads),
                    lin.matmul(x, residual=res, isa="scalar"))
            else:
                np.testing.assert_array_equal(out, ref)


def test_int8_activation_and_residual_order():
    # act(W x + b) + residual, as for the float layouts.
    rng = np.random.default_rng(5)
    w = sparse_weight(rng, 12, 40, density=0.5)
    bias = rng.standard_normal(12).astype(np.float32)
    x = rng.standard_normal((40, 9)).astype(np.float32)
    residual = rng.standard_normal((12, 9)).astype(np.float32)
    lin = kernels.pack_int8(w, bias)
    plain = lin.matmul(x).astype(np.float64)
    relu = lin.matmul(x, activation="relu", residual=residual)
    np.testing.assert_allclose(relu, np.maximum(plain, 0) + residual, rtol=0, atol=1e-6)


@pytest.mark.parametrize("isa", ISAS)
def test_int8_extreme_weights_and_activations_stay_exact(isa):
    # Every weight at +-127 and activations spanning the full u8 range: the largest sums the kernel can see
    # for this K, still exact in int32.
    rng = np.random.default_rng(9)
    k = 2048
    w = np.where(rng.random((8, k)) < 0.5, 1.0, -1.0).astype(np.float32)
    w[0] = 1.0  # all +127
    x = np.where(rng.random((k, 64)) < 0.5, 40.0, -40.0).astype(np.float32)
    x[:, 0] = 40.0
    q = quantize_weight_int8(w)
    assert np.abs(q["block_values"]).min() == 127
    y = kernels.pack_int8(w).matmul(x, isa=isa)
    expected = int8_reference(q, 8, x)
    tol = np.spacing(np.abs(expected).astype(np.float32)).astype(np.float64)
    assert np.all(np.abs(y - expected) <= tol)
    assert y[0, 0] == pytest.approx(40.0 * k, rel=1e-6)


@pytest.mark.parametrize("isa", ISAS)
def test_int8_most_negative_weight_stays_exact(isa):
    # A file may hold -128 (the exporter writes -127 .. 127). With activations at 255, a byte pair of -128s sums
    # to 2 x 255 x -128, far outside the 16 bits of the AVX2 kernel's vpmaddubsw: its blocks must be split
    # (kernels.h, int8_bounded_pairs), and -128 / 2 = -64 is the bound exactly.
    k, n = 64, 70
    ptr = np.array([0, k // 4, k // 2], np.int32)
    col = np.tile(np.arange(k // 4, dtype=np.uint16), 2)
    vals = np.full((k // 2, 4), -128, np.int8)
    vals[k // 4:, ::2] = 127  # second row: pairs of opposite extremes, bounded as they are
    scales = np.array([0.01, 0.02], np.float32)
    x = np.full((k, n), 5.0, np.float32)
    x[:, 1] = -5.0  # a token quantized to 0 everywhere (zero point 255)
    x[0, :] = -5.0  # and the other tokens spanning 0 .. 255
    lin = kernels.PackedLinear.block4_int8(2, k, ptr, col, vals, scales)
    q = dict(block_ptr=ptr, block_col=col, block_values=vals, scales=scales)
    expected = int8_reference(q, 2, x)
    y = lin.matmul(x, isa=isa)
    assert np.all(np.abs(y - expected) <= np.spacing(np.abs(expected).astype(np.float32)))
    assert lin.nnz == 4 * (k // 2)  # the split is the kernel's business: the weights as stored


@pytest.mark.parametrize("isa", ISAS)
def test_int8_first_use_from_many_threads(isa):
    # The AVX2 kernel's split copy of the weights is built on first use (std::call_once): threads that arrive
    # together must all get it whole (matmul releases the GIL).
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(31)
    w = sparse_weight(rng, 96, 256, density=0.3, block=True)  # full-range weights: many blocks need the split
    x = rng.standard_normal((256, 70)).astype(np.float32)
    expected = int8_reference(quantize_weight_int8(w), 96, x)
    tol = np.spacing(np.abs(expected).astype(np.float32))
    for _ in range(3):
        lin = kernels.pack_int8(w)
        with ThreadPoolExecutor(8) as pool:
            outs = list(pool.map(lambda _: lin.matmul(x, isa=isa, num_threads=2), range(8)))
        for y in outs:
            assert np.all(np.abs(y - expected) <= tol)


@pytest.mark.parametrize("isa", ISAS)
def test_int8_error_within_the_quantization_bound(isa):
    # |W x - y| <= sum |w| * step_x / 2 + sum |x| * step_w / 2 (+ the product of the two half steps), per entry:
    # the bound the two roundings allow; the float result must respect it.
    rng = np.random.default_rng(21)
    w = sparse_weight(rng, 50, 384, density=0.1, block=True)
    x = rng.standard_normal((384, 40)).astype(np.float32)
    q = quantize_weight_int8(w)
    _, x_scale, _ = quantize_reference(x)
    y = kernels.pack_int8(w).matmul(x, isa=isa).astype(np.float64)
    exact = w.astype(np.float64) @ x.astype(np.float64)
    support = w != 0
    half_x, half_w = x_scale[None, :] / 2, q["scales"][:, None] / 2
    bound = np.abs(w).astype(np.float64) @ np.ones(x.shape, np.float64) * half_x \
        + half_w * (support.astype(np.float64) @ (np.abs(x) + half_x)) + 1e-5
    assert np.all(np.abs(y - exact) <= bound)
    assert np.abs(y - exact).max() > 0  # int8 is not exact: the test would notice a float fallback


# ------------------------------------------------------------------------------------------------------------
# Validation
# ------------------------------------------------------------------------------------------------------------


def _valid_arrays():
    ptr = np.array([0, 1, 1, 3], np.int32)
    col = np.array([0, 0, 2], np.uint16)
    vals = np.array([[1, -2, 3, 4], [5, 6, 7, 8], [9, 10, 0, 0]], np.int8)
    scales = np.array([0.1, 0.0, 0.5], np.float32)
    return ptr, col, vals, scales


def test_block4_int8_accepts_valid_arrays():
    ptr, col, vals, scales = _valid_arrays()
    lin = kernels.PackedLinear.block4_int8(3, 10, ptr, col, vals, scales)
    assert lin.layout == "block4_int8" and lin.shape == (3, 10) and lin.nnz == 12


@pytest.mark.parametrize("case, exc, fragment", [
    ("values past K", ValueError, "past the last input"),
    ("block out of range", ValueError, "out of range"),
    ("pointer not monotone", ValueError, "monotone"),
    ("negative scale", ValueError, "scale of row"),
    ("nan scale", ValueError, "scale of row"),
    ("values float", TypeError, "int8"),
    ("values wrong shape", ValueError, "shape"),
    ("too many columns", ValueError, "at most 32768"),
])
def test_block4_int8_refuses_bad_arrays(case, exc, fragment):
    ptr, col, vals, scales = _valid_arrays()
    cols = 10
    if case == "values past K":
        vals[2, 2] = 1
    elif case == "block out of range":
        col[2] = 3
    elif case == "pointer not monotone":
        ptr[1] = 2
    elif case == "negative scale":
        scales[0] = -1
    elif case == "nan scale":
        scales[2] = np.nan
    elif case == "values float":
        vals = vals.astype(np.float32)
    elif case == "values wrong shape":
        vals = vals[:, :3].copy()
    elif case == "too many columns":
        cols = 32769
        col = np.array([0, 0, 2], np.uint16)
        vals[2, 2:] = 0
    with pytest.raises(exc, match=fragment):
        kernels.PackedLinear.block4_int8(3, cols, ptr, col, vals, scales)


def test_int8_isa_names():
    names = {isa: kernels.int8_isa(isa) for isa in ISAS}
    assert names["scalar"] == "scalar"
    if "avx2" in names:
        assert names["avx2"] == "avx2"
    if "avx512" in names:
        flags = _core.cpu_info()["flags"]
        assert names["avx512"] == ("avx512_vnni" if "avx512_vnni" in flags else "avx2")
    # aarch64: the dot product is a path of its own; plain neon keeps the scalar product (its quantizer is NEON).
    if "neon" in names:
        assert names["neon"] == "scalar"
    if "neon_dotprod" in names:
        assert names["neon_dotprod"] == "neon_dotprod"
