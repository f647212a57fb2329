"""PackedLinear kernels (every ISA x every layout) against a float64 numpy reference."""

from __future__ import annotations

import platform

import numpy as np
import pytest

import sparsebert
from sparsebert import _core
from sparsebert.kernels import pack
from sparsebert.tuning import Tuning

from conftest import (ACTIVATIONS, AVAILABLE_ISAS, FOREIGN_ISA, LAYOUTS, assert_kernel_close, kernel_tolerance,
                      linear_ref)

# Sizes around the kernels' tile edges: 4 (blocks / F_pad), 16 (SIMD lanes), 64 (token tile).
EDGE_SIZES = (1, 3, 15, 16, 17, 63, 64, 65, 130)


def make_weight(rng, n, k, density=0.35):
    """A sparse [n, k] float32 matrix with the awkward cases built in:

    row 0 empty, row 1 a full leading 4-block plus the (partial when k % 4 != 0) trailing block, row 2 a single
    nonzero in the last column, the last row fully dense; the rest random at ``density``.
    """
    w = rng.standard_normal((n, k)).astype(np.float32)
    mask = rng.random((n, k)) < density
    if n >= 4:
        mask[0, :] = False
        mask[1, :] = False
        mask[1, : min(4, k)] = True
        mask[1, 4 * ((k - 1) // 4) :] = True
        mask[2, :] = False
        mask[2, k - 1] = True
        mask[-1, :] = True
    w[~mask] = 0.0
    return w


def block_count(w):
    n, k = w.shape
    kp = -(-k // 4) * 4
    padded = np.zeros((n, kp), dtype=w.dtype)
    padded[:, :k] = w
    return int(np.count_nonzero(padded.reshape(n, kp // 4, 4).any(axis=2)))


def expected_nnz(w, layout):
    if layout == "dense":
        return w.size
    if layout == "unstructured":
        return int(np.count_nonzero(w))
    return 4 * block_count(w)


# ------------------------------------------------------------------------------------------------------------
# ISA discovery
# ------------------------------------------------------------------------------------------------------------


def test_available_isas_shape():
    isas = sparsebert.available_isas()
    assert isinstance(isas, list) and isas, isas
    assert isas[-1] == "scalar"
    order = ["avx512", "avx2", "neon_dotprod", "neon", "scalar"]
    assert set(isas) <= set(order)
    assert isas == [i for i in order if i in isas], f"not best-first: {isas}"
    assert len(set(isas)) == len(isas)
    assert sparsebert.default_isa() == isas[0]
    assert _core.TILE_TOKENS == 64


def test_isa_detection_matches_cpuinfo():
    # On Linux, cross-check CPUID / HWCAP detection with the kernel's view of the flags (OS support included):
    # x86 lists them on "flags" lines, aarch64 on "Features" lines.
    try:
        with open("/proc/cpuinfo") as f:
            flags = next(line for line in f if line.startswith(("flags", "Features"))).split()
    except (OSError, StopIteration):
        pytest.skip("no /proc/cpuinfo")
    arm = platform.machine().lower() in ("aarch64", "arm64")
    if arm != (flags[0] == "Features"):  # qemu-user (tools/run_aarch64_model.sh) shows the host's
        pytest.skip(f"/proc/cpuinfo describes another architecture than {platform.machine()}")
    isas = sparsebert.available_isas()
    if arm:
        assert ("neon" in isas) == ("asimd" in flags)
        assert ("neon_dotprod" in isas) == ("asimd" in flags and "asimddp" in flags)
        for flag in ("asimddp", "i8mm"):
            assert (flag in _core.cpu_info()["flags"]) == (flag in flags), flag
        return
    assert ("avx2" in isas) == ("avx2" in flags and "fma" in flags)
    if "avx512" in isas:
        assert "avx512f" in flags
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= set(flags):
        assert "avx512" in isas
    # Linux lists AMX only once it enables tile state, and then grants it to a process that asks (bf16 attention).
    amx = {"avx512_bf16", "amx_tile", "amx_bf16"} <= set(flags) and "avx512" in isas
    assert (_core.bf16_attention_unavailable() is None) == amx, _core.bf16_attention_unavailable()


def test_sparsebert_isa_env_override(monkeypatch):
    monkeypatch.setenv("SPARSEBERT_ISA", "scalar")
    assert sparsebert.default_isa() == "scalar"
    for isa in sparsebert.available_isas():
        monkeypatch.setenv("SPARSEBERT_ISA", isa)
        assert sparsebert.default_isa() == isa
    monkeypatch.setenv("SPARSEBERT_ISA", "sse9")
    # ARCHITECTURE.md says RuntimeError; the binding maps std::invalid_argument to ValueError. Either names it.
    with pytest.raises((RuntimeError, ValueError), match="sse9"):
        sparsebert.default_isa()


def test_cpu_info():
    info = _core.cpu_info()
    assert isinstance(info, dict)
    assert isinstance(info["vendor"], str) and isinstance(info["brand"], str)
    flags = set(info["flags"])
    if "avx2" in sparsebert.available_isas():
        assert {"avx2", "fma"} <= flags
    if "avx512" in sparsebert.available_isas():
        assert "avx512f" in flags
    if "neon_dotprod" in sparsebert.available_isas():
        assert {"neon", "asimddp"} <= flags


# ------------------------------------------------------------------------------------------------------------
# Correctness over tile edges
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", EDGE_SIZES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_matmul_edge_sizes(isa, layout, k):
    rng = np.random.default_rng(1000 + k)
    for n in EDGE_SIZES:
        w = make_weight(rng, n, k)
        b = rng.standard_normal(n).astype(np.float32)
        p = pack(w, b, layout=layout)
        assert p.layout == layout
        assert (p.rows, p.cols) == (n, k)
        assert p.nnz == expected_nnz(w, layout)
        for t in EDGE_SIZES:
            x = rng.standard_normal((k, t)).astype(np.float32)
            y = p.matmul(x, isa=isa)
            assert_kernel_close(y, w, x, b, what=f"{isa}/{layout} N={n} K={k} T={t}")


# The sparse layouts cut K into blocks whose partial sums are carried in the output (about 128 columns each, so
# only K > 192 has several), and pair rows within panels of 32 rows, padding the shorter row of a pair.
# Tuning.kblock_cols forces tiny K-blocks so small matrices cross many of them.
@pytest.mark.parametrize("kblock", [0, 4, 12, 64])
@pytest.mark.parametrize("layout", ["unstructured", "block4"])
def test_matmul_across_k_blocks(isa, layout, kblock):
    rng = np.random.default_rng(31)
    for n, k, density in [(70, 517, 0.1), (33, 300, 0.02), (65, 1030, 0.5), (40, 45, 0.3)]:
        w = make_weight(rng, n, k, density)
        b = rng.standard_normal(n).astype(np.float32)
        p = pack(w, b, layout=layout, tuning=Tuning(kblock_cols=kblock))
        if kblock:
            assert p.kblock_cols == min(k, kblock), (p.kblock_cols, k, kblock)
        for t in (1, 64, 130):
            x = rng.standard_normal((k, t)).astype(np.float32)
            r = rng.standard_normal((n, t)).astype(np.float32)
            y = p.matmul(x, activation="gelu", residual=r, isa=isa, num_threads=2)
            assert_kernel_close(y, w, x, b, "gelu", r, what=f"{isa}/{layout} kblock={kblock} N={n} K={k} T={t}")


# Matrices with many more rows than columns run every K-block over one group of panels before the next
# (Tuning.group_panels forces the group size): groups that cut a thread's rows unevenly, a short last panel and
# odd row counts must still give every row its full sum, activation and residual.
@pytest.mark.parametrize("group_panels", [-1, 0, 1, 3])
@pytest.mark.parametrize("layout", ["unstructured", "block4"])
def test_matmul_across_row_groups(isa, layout, group_panels):
    rng = np.random.default_rng(37)
    for n, k, density in [(301, 70, 0.3), (200, 33, 0.5), (97, 40, 0.1)]:
        w = make_weight(rng, n, k, density)
        b = rng.standard_normal(n).astype(np.float32)
        p = pack(w, b, layout=layout, tuning=Tuning(kblock_cols=12, group_panels=group_panels))
        if group_panels >= 0:
            assert p.group_rows == (min(n, 32 * group_panels) if group_panels else n), (p.group_rows, n)
        for t, threads in ((1, 1), (64, 3), (130, 2)):
            x = rng.standard_normal((k, t)).astype(np.float32)
            r = rng.standard_normal((n, t)).astype(np.float32)
            y = p.matmul(x, activation="gelu", residual=r, isa=isa, num_threads=threads)
            what = f"{isa}/{layout} group_panels={group_panels} N={n} K={k} T={t}"
            assert_kernel_close(y, w, x, b, "gelu", r, what=what)
            y = p.matmul(x, isa=isa, num_threads=threads)
            assert_kernel_close(y, w, x, b, "none", what=what)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_matmul_activation_and_residual(isa, layout, activation):
    rng = np.random.default_rng(7)
    for n, k, t in [(17, 63, 65), (64, 130, 16), (3, 5, 130)]:
        w = make_weight(rng, n, k)
        b = rng.standard_normal(n).astype(np.float32)
        x = rng.standard_normal((k, t)).astype(np.float32)
        r = rng.standard_normal((n, t)).astype(np.float32)
        p = pack(w, b, layout=layout)
        y = p.matmul(x, activation=activation, isa=isa)
        assert_kernel_close(y, w, x, b, activation, what=f"{isa}/{layout}/{activation} {n}x{k}x{t}")
        y = p.matmul(x, activation=activation, residual=r, isa=isa)
        assert_kernel_close(y, w, x, b, activation, r, what=f"{isa}/{layout}/{activation}+res {n}x{k}x{t}")
        # The residual is added after the activation, not before it.
        if activation not in ("none",):
            wrong = linear_ref(w, x, b, "none") + r
            assert not np.allclose(y, wrong, atol=1e-3)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activation_extremes(isa, layout, activation):
    # W = identity, so the pre-activation is x exactly: checks the activation itself over a wide range,
    # including saturation (|x| up to 60, where a naive exp-based tanh overflows) and tiny values.
    k = 37
    w = np.eye(k, dtype=np.float32)
    vals = np.concatenate(
        [np.linspace(-60, 60, 41), np.linspace(-4, 4, 57), [0.0, 1e-30, -1e-30, 1e-7, -1e-7, 9.0, -9.0]]
    ).astype(np.float32)
    x = np.resize(vals, (k, 65)).astype(np.float32)
    y = pack(w, None, layout=layout).matmul(x, activation=activation, isa=isa)
    assert_kernel_close(y, w, x, None, activation, what=f"{isa}/{layout}/{activation}")
    if activation == "relu":
        assert (y >= 0).all()
    if activation == "tanh":
        assert (np.abs(y) <= 1).all()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_identity_input_reproduces_weight_exactly(isa, layout):
    # W @ I sums exactly one non-zero product per element: any correct kernel returns W bit for bit.
    rng = np.random.default_rng(3)
    for n, k in [(17, 65), (64, 3), (5, 130), (1, 1)]:
        w = make_weight(rng, n, k)
        y = pack(w, None, layout=layout).matmul(np.eye(k, dtype=np.float32), isa=isa)
        np.testing.assert_array_equal(y, w, err_msg=f"{isa}/{layout} {n}x{k}")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_zero_matrix(isa, layout):
    rng = np.random.default_rng(5)
    for n, k, t in [(1, 1, 1), (17, 63, 65), (64, 64, 64)]:
        w = np.zeros((n, k), dtype=np.float32)
        b = rng.standard_normal(n).astype(np.float32)
        x = rng.standard_normal((k, t)).astype(np.float32)
        r = rng.standard_normal((n, t)).astype(np.float32)
        p = pack(w, b, layout=layout)
        if layout != "dense":
            assert p.nnz == 0
        for act in ACTIVATIONS:
            y = p.matmul(x, activation=act, residual=r, isa=isa)
            assert_kernel_close(y, w, x, b, act, r, what=f"{isa}/{layout}/{act} zero {n}x{k}x{t}")
        # No bias, no residual: exactly zero.
        y = pack(w, None, layout=layout).matmul(x, isa=isa)
        np.testing.assert_array_equal(y, np.zeros((n, t), np.float32))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_fully_dense_matrix(isa, layout):
    # No zeros at all: every 4-block full, unstructured rows of length K (including K not a multiple of 4).
    rng = np.random.default_rng(11)
    for n, k, t in [(16, 64, 64), (17, 65, 63), (130, 3, 17)]:
        w = rng.standard_normal((n, k)).astype(np.float32)
        b = rng.standard_normal(n).astype(np.float32)
        x = rng.standard_normal((k, t)).astype(np.float32)
        p = pack(w, b, layout=layout)
        assert p.nnz == expected_nnz(w, layout)
        assert_kernel_close(p.matmul(x, isa=isa), w, x, b, what=f"{isa}/{layout} dense {n}x{k}x{t}")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_block_structured_matrix(isa, layout):
    # Whole 4-blocks kept/dropped (what 4-block pruning produces), odd K so the last block is partial.
    rng = np.random.default_rng(13)
    for n, k, t in [(33, 66, 65), (64, 130, 16), (7, 3, 5)]:
        kb = -(-k // 4)
        keep = rng.random((n, kb)) < 0.3
        keep[0] = False
        keep[-1] = True
        mask = np.repeat(keep, 4, axis=1)[:, :k]
        w = (rng.standard_normal((n, k)) * mask).astype(np.float32)
        b = rng.standard_normal(n).astype(np.float32)
        x = rng.standard_normal((k, t)).astype(np.float32)
        p = pack(w, b, layout=layout)
        if layout == "block4":
            assert p.nnz == 4 * int(keep.sum())
        assert_kernel_close(p.matmul(x, "gelu", isa=isa), w, x, b, "gelu", what=f"{isa}/{layout} blocks")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("num_threads", [1, 2, 3])
def test_num_threads(isa, layout, num_threads):
    rng = np.random.default_rng(17)
    n, k, t = 257, 130, 129
    w = make_weight(rng, n, k)
    b = rng.standard_normal(n).astype(np.float32)
    x = rng.standard_normal((k, t)).astype(np.float32)
    r = rng.standard_normal((n, t)).astype(np.float32)
    p = pack(w, b, layout=layout)
    y = p.matmul(x, activation="gelu", residual=r, isa=isa, num_threads=num_threads)
    assert_kernel_close(y, w, x, b, "gelu", r, what=f"{isa}/{layout} threads={num_threads}")
    y1 = p.matmul(x, activation="gelu", residual=r, isa=isa, num_threads=1)
    tol = kernel_tolerance(w.astype(np.float64), x.astype(np.float64), b, "gelu", r.astype(np.float64))
    assert (np.abs(y.astype(np.float64) - y1) <= 2 * tol).all()


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("simd", [i for i in AVAILABLE_ISAS if i != "scalar"] or ["<no SIMD ISA>"])
def test_simd_agrees_with_scalar(simd, layout):
    if simd not in AVAILABLE_ISAS:
        pytest.skip("this CPU has no SIMD ISA")
    rng = np.random.default_rng(19)
    for n, k, t in [(65, 63, 130), (16, 17, 15), (130, 130, 1)]:
        w = make_weight(rng, n, k)
        b = rng.standard_normal(n).astype(np.float32)
        x = rng.standard_normal((k, t)).astype(np.float32)
        r = rng.standard_normal((n, t)).astype(np.float32)
        p = pack(w, b, layout=layout)
        for act in ACTIVATIONS:
            ys = p.matmul(x, act, r, isa="scalar")
            yv = p.matmul(x, act, r, isa=simd)
            tol = kernel_tolerance(w.astype(np.float64), x.astype(np.float64), b, act, r.astype(np.float64))
            err = np.abs(ys.astype(np.float64) - yv)
            assert (err <= 2 * tol).all(), f"{simd} vs scalar {layout}/{act}: max err {err.max():.3g}"


@pytest.mark.parametrize("simd", [i for i in AVAILABLE_ISAS if i != "scalar"] or ["<no SIMD ISA>"])
@pytest.mark.parametrize("seq", [20, 512])
def test_softmax_of_sharp_columns_has_no_denormals(simd, seq):
    # A sharp attention head: one key far above the rest. Denormal probabilities would make every multiply-add of
    # the following product a microcode assist (fp32 attention ran 19x slower on such a model); the SIMD softmax
    # floors them at e^-69 / sum, a normal number even over the longest sequences.
    if simd not in AVAILABLE_ISAS:
        pytest.skip("this CPU has no SIMD ISA")
    rng = np.random.default_rng(seq)
    scores = rng.uniform(-400, -70, (seq, 33)).astype(np.float32)
    scores[0] = 0
    p = _core.Kernels(simd).softmax_cols(scores, 1.0, np.ones(seq, np.uint8))
    assert not ((p != 0) & (np.abs(p) < np.finfo(np.float32).tiny)).any()
    assert np.allclose(p[0], 1.0, rtol=1e-6) and (p[1:] <= 1.1e-30).all()


def test_default_isa_is_used_when_none(isa):
    rng = np.random.default_rng(23)
    w = make_weight(rng, 17, 33)
    x = rng.standard_normal((33, 20)).astype(np.float32)
    p = pack(w, None, layout="unstructured")
    assert_kernel_close(p.matmul(x), w, x, what="isa=None")
    assert_kernel_close(p.matmul(x, isa=isa), w, x, what=isa)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_non_contiguous_x(isa, layout):
    rng = np.random.default_rng(29)
    n, k, t = 17, 33, 40
    w = make_weight(rng, n, k)
    b = rng.standard_normal(n).astype(np.float32)
    x = rng.standard_normal((k, t)).astype(np.float32)
    p = pack(w, b, layout=layout)
    y = p.matmul(x, isa=isa)
    np.testing.assert_array_equal(p.matmul(np.asfortranarray(x), isa=isa), y)
    big = rng.standard_normal((k, 2 * t)).astype(np.float32)
    big[:, ::2] = x
    np.testing.assert_array_equal(p.matmul(big[:, ::2], isa=isa), y)
    r = rng.standard_normal((n, t)).astype(np.float32)
    np.testing.assert_array_equal(
        p.matmul(x, residual=np.asfortranarray(r), isa=isa), p.matmul(x, residual=r, isa=isa)
    )


def test_matmul_does_not_modify_inputs(isa):
    rng = np.random.default_rng(31)
    w = make_weight(rng, 9, 21)
    b = rng.standard_normal(9).astype(np.float32)
    x = rng.standard_normal((21, 70)).astype(np.float32)
    r = rng.standard_normal((9, 70)).astype(np.float32)
    w0, b0, x0, r0 = w.copy(), b.copy(), x.copy(), r.copy()
    for layout in LAYOUTS:
        p = pack(w, b, layout=layout)
        p.matmul(x, "relu", r, isa=isa, num_threads=2)
    for a, a0 in [(w, w0), (b, b0), (x, x0), (r, r0)]:
        np.testing.assert_array_equal(a, a0)
    # The packed weight is a copy: mutating the source afterwards changes nothing.
    p = pack(w, b, layout="dense")
    y = p.matmul(x, isa=isa)
    w[:] = 0.0
    b[:] = 0.0
    np.testing.assert_array_equal(p.matmul(x, isa=isa), y)


# ------------------------------------------------------------------------------------------------------------
# pack()
# ------------------------------------------------------------------------------------------------------------


def test_pack_auto_and_sizes():
    rng = np.random.default_rng(37)
    dense = rng.standard_normal((64, 64)).astype(np.float32)
    p = pack(dense)
    assert p.layout == "dense"
    assert p.nbytes >= dense.nbytes
    sparse = dense * (rng.random(dense.shape) < 0.05)
    q = pack(sparse)
    assert q.layout in ("unstructured", "block4")
    assert q.nbytes < p.nbytes
    u = pack(sparse, layout="unstructured")
    # 4 bytes of value + 2 bytes of index per nonzero, plus row pointers: far below dense.
    assert u.nbytes < 0.25 * p.nbytes
    x = rng.standard_normal((64, 9)).astype(np.float32)
    assert_kernel_close(q.matmul(x), sparse, x, what="auto")


def test_pack_accepts_float64():
    w = [[1.0, 0.0, 2.0], [0.0, 0.0, -3.5]]
    for layout in LAYOUTS:
        p = pack(np.array(w, dtype=np.float64), np.array([0.5, -1.0]), layout=layout)
        y = p.matmul(np.eye(3, dtype=np.float32))
        np.testing.assert_array_equal(y, np.array(w, np.float32) + np.array([[0.5], [-1.0]], np.float32))


@pytest.mark.parametrize(
    "weight, bias, layout",
    [
        (np.zeros(5, np.float32), None, "dense"),
        (np.zeros((2, 3, 4), np.float32), None, "dense"),
        (np.zeros((4, 5), np.float32), np.zeros(5, np.float32), "dense"),
        (np.zeros((4, 5), np.float32), np.zeros(5, np.float32), "unstructured"),
        (np.zeros((4, 5), np.float32), np.zeros(5, np.float32), "block4"),
        (np.zeros((4, 5), np.float32), None, "csr-ish"),
    ],
)
def test_pack_rejects_bad_arguments(weight, bias, layout):
    with pytest.raises(ValueError):
        pack(weight, bias, layout=layout)


# ------------------------------------------------------------------------------------------------------------
# matmul argument checking
# ------------------------------------------------------------------------------------------------------------


@pytest.fixture(params=LAYOUTS)
def packed(request):
    rng = np.random.default_rng(41)
    w = make_weight(rng, 6, 10)
    return pack(w, rng.standard_normal(6).astype(np.float32), layout=request.param)


def test_matmul_wrong_x_shape(packed):
    with pytest.raises(ValueError):
        packed.matmul(np.zeros((11, 4), np.float32))
    with pytest.raises(ValueError):
        packed.matmul(np.zeros((9, 4), np.float32))
    with pytest.raises(ValueError):
        packed.matmul(np.zeros(10, np.float32))
    with pytest.raises(ValueError):
        packed.matmul(np.zeros((10, 4, 1), np.float32))


@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.int32, np.int64, np.bool_, object])
def test_matmul_wrong_x_dtype(packed, dtype):
    with pytest.raises(TypeError):
        packed.matmul(np.zeros((10, 4), dtype=dtype))


def test_matmul_wrong_residual(packed):
    x = np.zeros((10, 4), np.float32)
    for bad in [np.zeros((6, 5), np.float32), np.zeros((5, 4), np.float32), np.zeros(24, np.float32)]:
        with pytest.raises(ValueError):
            packed.matmul(x, residual=bad)
    with pytest.raises(TypeError):
        packed.matmul(x, residual=np.zeros((6, 4), np.float64))


def test_matmul_bad_activation_and_isa(packed):
    x = np.zeros((10, 4), np.float32)
    with pytest.raises(ValueError, match="swish"):
        packed.matmul(x, activation="swish")
    with pytest.raises(ValueError, match=FOREIGN_ISA):
        packed.matmul(x, isa=FOREIGN_ISA)


# ------------------------------------------------------------------------------------------------------------
# Low-level constructors validate their arrays
# ------------------------------------------------------------------------------------------------------------


def csr_arrays(w):
    n, k = w.shape
    row_ptr = np.zeros(n + 1, np.int32)
    cols, vals = [], []
    for i in range(n):
        nz = np.flatnonzero(w[i])
        cols.extend(nz)
        vals.extend(w[i, nz])
        row_ptr[i + 1] = len(cols)
    return row_ptr, np.array(cols, np.uint16), np.array(vals, np.float32)


def block4_arrays(w):
    n, k = w.shape
    kp = -(-k // 4) * 4
    padded = np.zeros((n, kp), np.float32)
    padded[:, :k] = w
    blocks = padded.reshape(n, kp // 4, 4)
    ptr = np.zeros(n + 1, np.int32)
    cols, vals = [], []
    for i in range(n):
        nz = np.flatnonzero(blocks[i].any(axis=1))
        cols.extend(nz)
        vals.extend(blocks[i, nz])
        ptr[i + 1] = len(cols)
    return ptr, np.array(cols, np.uint16), np.array(vals, np.float32).reshape(-1, 4)


@pytest.fixture
def small_w():
    # 4 x 10: row 0 empty, two nonzeros per other row, K not a multiple of 4.
    w = np.zeros((4, 10), np.float32)
    w[1, [0, 7]] = [1.0, 2.0]
    w[2, [3, 9]] = [3.0, -1.0]
    w[3, [4, 5]] = [0.5, 4.0]
    return w


def test_low_level_constructors_valid(small_w, isa):
    b = np.arange(4, dtype=np.float32)
    x = np.random.default_rng(0).standard_normal((10, 7)).astype(np.float32)
    pu = _core.PackedLinear.unstructured(4, 10, *csr_arrays(small_w), b)
    pb = _core.PackedLinear.block4(4, 10, *block4_arrays(small_w), b)
    pd = _core.PackedLinear.dense(small_w, b)
    assert (pu.layout, pb.layout, pd.layout) == ("unstructured", "block4", "dense")
    assert (pu.nnz, pb.nnz, pd.nnz) == (6, 4 * 5, 40)
    for p in (pu, pb, pd):
        assert (p.rows, p.cols) == (4, 10)
        assert_kernel_close(p.matmul(x, isa=isa), small_w, x, b, what=p.layout)
    # bias is optional
    p = _core.PackedLinear.unstructured(4, 10, *csr_arrays(small_w), None)
    assert_kernel_close(p.matmul(x, isa=isa), small_w, x, None, what="no bias")


# The message must say which array is wrong (by its argument name or by its role).
PTR = r"row_ptr|block_ptr|pointer"
INDEX = r"col_idx|block_col|index|indices|column"


def _csr_cases(w):
    ptr, col, val = csr_arrays(w)
    b = np.zeros(4, np.float32)

    def m(**kw):
        args = dict(n_rows=4, n_cols=10, row_ptr=ptr.copy(), col_idx=col.copy(), values=val.copy(), bias=b)
        args.update(kw)
        return args

    bad_ptr_order = ptr.copy()
    bad_ptr_order[2], bad_ptr_order[3] = 4, 2
    col_oob = col.copy()
    col_oob[1] = 10
    col_dup = col.copy()
    col_dup[1] = col_dup[0]
    col_desc = col.copy()
    col_desc[0], col_desc[1] = col[1], col[0]
    ptr_first = ptr.copy()
    ptr_first[0] = 1
    ptr_last = ptr.copy()
    ptr_last[-1] = len(col) - 1
    ptr_neg = ptr.copy()
    ptr_neg[1] = -1
    return {
        "row_ptr not monotone": (m(row_ptr=bad_ptr_order), PTR),
        "row_ptr too short": (m(row_ptr=ptr[:-1].copy()), PTR),
        "row_ptr too long": (m(row_ptr=np.append(ptr, ptr[-1]).astype(np.int32)), PTR),
        "row_ptr[0] != 0": (m(row_ptr=ptr_first), PTR),
        "row_ptr[-1] != nnz": (m(row_ptr=ptr_last), None),
        "row_ptr negative": (m(row_ptr=ptr_neg), PTR),
        "col_idx >= K": (m(col_idx=col_oob), INDEX),
        "col_idx duplicate in row": (m(col_idx=col_dup), INDEX),
        "col_idx decreasing in row": (m(col_idx=col_desc), INDEX),
        "values too short": (m(values=val[:-1].copy()), None),
        "values too long": (m(values=np.append(val, 1.0).astype(np.float32)), None),
        "bias wrong length": (m(bias=np.zeros(5, np.float32)), "bias"),
        "n_cols too small": (m(n_cols=9), None),
        "n_rows wrong": (m(n_rows=3), None),
    }


@pytest.mark.parametrize(
    "case",
    [
        "row_ptr not monotone",
        "row_ptr too short",
        "row_ptr too long",
        "row_ptr[0] != 0",
        "row_ptr[-1] != nnz",
        "row_ptr negative",
        "col_idx >= K",
        "col_idx duplicate in row",
        "col_idx decreasing in row",
        "values too short",
        "values too long",
        "bias wrong length",
        "n_cols too small",
        "n_rows wrong",
    ],
)
def test_unstructured_constructor_rejects(small_w, case):
    args, fragment = _csr_cases(small_w)[case]
    with pytest.raises(ValueError, match=f"(?i){fragment}" if fragment else None):
        _core.PackedLinear.unstructured(
            args["n_rows"], args["n_cols"], args["row_ptr"], args["col_idx"], args["values"], args["bias"]
        )


def _block_cases(w):
    ptr, col, val = block4_arrays(w)  # K=10 -> 3 blocks, the last one partial
    b = np.zeros(4, np.float32)

    def m(**kw):
        args = dict(n_rows=4, n_cols=10, block_ptr=ptr.copy(), block_col=col.copy(), values=val.copy(), bias=b)
        args.update(kw)
        return args

    bad_order = ptr.copy()
    bad_order[2], bad_order[3] = bad_order[3], bad_order[2] - 1
    col_oob = col.copy()
    col_oob[-1] = 3  # blocks 0..2 exist for K=10
    col_dup = col.copy()
    col_dup[1] = col_dup[0]
    col_desc = col.copy()
    col_desc[0], col_desc[1] = col[1], col[0]
    ptr_first = ptr.copy()
    ptr_first[0] = 1
    # A non-zero weight stored past K inside the partial last block (block 2 covers inputs 8..11, K = 10).
    past_k = val.copy()
    last_row_blocks = np.flatnonzero(col == 2)
    past_k[last_row_blocks[0], 3] = 1.0
    return {
        "block_ptr not monotone": (m(block_ptr=bad_order), PTR),
        "block_ptr too short": (m(block_ptr=ptr[:-1].copy()), PTR),
        "block_ptr[0] != 0": (m(block_ptr=ptr_first), PTR),
        "block_col >= ceil(K/4)": (m(block_col=col_oob), INDEX),
        "block_col duplicate": (m(block_col=col_dup), INDEX),
        "block_col decreasing": (m(block_col=col_desc), INDEX),
        "values wrong count": (m(values=val[:-1].copy()), None),
        "values not [nb, 4]": (m(values=np.zeros((len(col), 3), np.float32)), None),
        "values flat": (m(values=val.reshape(-1).copy()), None),
        "bias wrong length": (m(bias=np.zeros(3, np.float32)), "bias"),
        # Kernels read whole blocks: a NaN/inf stored past K would reach the output (0 * NaN = NaN).
        "nonzero past K in partial block": (m(values=past_k), None),
    }


@pytest.mark.parametrize(
    "case",
    [
        "block_ptr not monotone",
        "block_ptr too short",
        "block_ptr[0] != 0",
        "block_col >= ceil(K/4)",
        "block_col duplicate",
        "block_col decreasing",
        "values wrong count",
        "values not [nb, 4]",
        "values flat",
        "bias wrong length",
        "nonzero past K in partial block",
    ],
)
def test_block4_constructor_rejects(small_w, case):
    args, fragment = _block_cases(small_w)[case]
    with pytest.raises(ValueError, match=f"(?i){fragment}" if fragment else None):
        _core.PackedLinear.block4(
            args["n_rows"], args["n_cols"], args["block_ptr"], args["block_col"], args["values"], args["bias"]
        )


def test_dense_constructor_rejects():
    with pytest.raises(ValueError):
        _core.PackedLinear.dense(np.zeros((3, 4), np.float32), np.zeros(4, np.float32))
    with pytest.raises(ValueError):
        _core.PackedLinear.dense(np.zeros(12, np.float32), None)


def test_kernel_benchmark_times_runs_and_checks_x():
    rng = np.random.default_rng(3)
    w = make_weight(rng, 40, 70, 0.2)
    p = pack(w, None, layout="unstructured")
    seconds = p.benchmark(65, runs=3, num_threads=2, activation="gelu", warmup=0)
    assert seconds.shape == (3,) and np.all(seconds > 0)
    x = rng.standard_normal((70, 65)).astype(np.float32)
    assert p.benchmark(65, runs=2, x=x).shape == (2,)
    with pytest.raises(ValueError, match="x"):
        p.benchmark(64, runs=1, x=x)  # x holds 65 tokens
    with pytest.raises(ValueError, match="x"):
        p.benchmark(65, runs=1, x=x[:69])
    with pytest.raises(ValueError, match="tokens"):
        p.benchmark(0)
