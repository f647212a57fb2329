"""Every entry of the kernel table, called directly at named edge cases, on every ISA this CPU has.

CASES names the edge cases of each kernel in ``_core.KERNELS`` (generated from the C++ table, SPARSEBERT_KERNELS in
csrc/kernels/kernels.h), in the spirit of XNNPACK's m_lt_mr / n_div_nr / k_lt_kblock. A case calls one ISA's table
through ``_core.Kernels(isa)`` and returns checks against references written here from the contracts in kernels.h:

* float kernels: a float64 numpy reference and an element-wise bound derived from the operations the contract
  implies (gamma_n for a sum of n rounded terms in any order, the activation's Lipschitz constant and conftest's
  ACT_ULPS, the exp error for the softmax, first-order propagation through LayerNorm's mean and 1/sqrt). A correct
  kernel cannot exceed it; a wrong index, epilogue or mask is orders of magnitude beyond it.
* quantize and spmm_block4_i8: bitwise equality with an exact reference (integer sums, the contract's float32 steps,
  one correctly rounded fma).
* every SIMD table against the scalar table, the oracle: bitwise for the int8 kernels, within the sum of the two
  bounds for the float kernels (each result is within its bound of the exact value).
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple, Optional

import numpy as np
import pytest

from sparsebert import _core

from conftest import ACT_ULPS, FP32_U, activation_ref

ISAS = _core.available_isas()
U = FP32_U
F32 = np.float32
F64 = np.float64
FLT_MAX = float(np.finfo(np.float32).max)
#: SIMD code may flush denormals (FTZ/DAZ): results below the smallest normal float may become 0 (as in conftest).
FLOOR = 4 * float(np.finfo(np.float32).tiny)
ACTIVATIONS = ("none", "gelu", "gelu_tanh", "relu", "tanh")
#: Token counts just around the vector (8 / 16 lanes) and tile (32 / 64 tokens) edges.
PARTIAL_TOKENS = (7, 15, 17, 63, 65, 130)
#: fp32 lanes of one vector register: what fma_peak counts per FMA instruction.
LANES = {"scalar": 1, "avx2": 8, "avx512": 16}
#: Relative error of the kernels' exp: the SIMD vexp is Cephes' expf polynomial, ~2 ulp on [-87, 88]
#: (csrc/kernels/simd/vmath.inl), and 2 ulp are at most 4 u relative; std::exp is within 1 ulp.
EXP_REL = 4 * U


def gamma(n):
    """Higham's gamma_n: |fl(sum of n products) - exact| <= gamma_n * sum |products|, any order, FMA or not."""
    return n * U / (1 - n * U)


class Check(NamedTuple):
    what: str
    got: np.ndarray
    want: np.ndarray
    tol: Optional[np.ndarray] = None  # element-wise bound on |got - want|; None: bitwise equality
    per_isa: bool = False  # differs between ISAs by design (fma_peak counts lanes): not compared with scalar


def _bits(a):
    a = np.ascontiguousarray(a)
    return a.view(f"u{a.itemsize}") if a.dtype.kind == "f" else a


def assert_check(what, got, want, tol):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    if tol is None:
        assert got.dtype == want.dtype, f"{what}: dtype {got.dtype}, expected {want.dtype}"
        bad = np.flatnonzero(_bits(got) != _bits(want))  # bitwise: -0.0 is not 0.0
        if bad.size:
            at = np.unravel_index(bad[0], got.shape)
            raise AssertionError(f"{what}: {bad.size}/{got.size} elements differ bitwise; first at {at}: "
                                 f"got {got[at]!r}, expected {want[at]!r}")
        return
    assert got.dtype == np.float32, f"{what}: dtype {got.dtype}, expected float32"
    tol = np.broadcast_to(np.asarray(tol, F64), want.shape)
    assert np.isfinite(tol).all(), f"{what}: an infinite bound would check nothing"
    err = np.abs(got.astype(F64) - want)
    ok = err <= tol  # False for NaN
    if not ok.all():
        at = np.unravel_index(np.argmax(np.where(ok, -np.inf, np.nan_to_num(err - tol, nan=np.inf))), err.shape)
        raise AssertionError(f"{what}: {int((~ok).sum())}/{err.size} elements out of bound; worst at {at}: got "
                             f"{got[at]!r}, expected {want[at]!r}, |err| = {err[at]:.3g} > bound {tol[at]:.3g}")


def epilogue_bound(mag, roundings, pre, activation, residual=None):
    """Bound on |fp32 act(s) + residual - exact| where s, of exact value `pre`, is a sum formed with `roundings`
    rounded steps (products and additions of a chain, gamma_n) over terms of total magnitude `mag`.

    Without an activation a kernel may fold the residual into the sum (the sparse and dense kernels start their
    accumulators from bias + residual), so it counts as one more term. Otherwise the activation propagates the
    sum's error by at most its Lipschitz constant, adds its own (ACT_ULPS u max(1, |pre|) for the transcendental
    ones, none for relu) and the residual add rounds once.
    """
    if residual is not None and activation == "none":
        return gamma(roundings + 1) * (mag + np.abs(residual)) + FLOOR
    lipschitz = 1.13 if activation in ("gelu", "gelu_tanh") else 1.0  # max of gelu' ~ 1.129
    tol = lipschitz * gamma(roundings) * mag
    if activation in ("gelu", "gelu_tanh", "tanh"):
        tol = tol + ACT_ULPS * U * np.maximum(1.0, np.abs(pre))
    if residual is not None:
        tol = tol + U * (np.abs(activation_ref(pre, activation)) + np.abs(residual) + tol)
    return tol + FLOOR


# ------------------------------------------------------------------------------------------------------------------
# spmm_csr / spmm_block4 (SpmmFn over a PairedView)
# ------------------------------------------------------------------------------------------------------------------


def paired_view(w, width, pairs, pad_to=0, pad_index=0):
    """The PairedView arrays of the rows of w ([m, width * indices]) paired as `pairs` ((r0, r1), r1 = -1 for a
    row alone). A row's entries are its non-zero columns (width 1) or 4-blocks (width 4); the shorter row of a pair,
    and every pair shorter than `pad_to`, is padded with zero-weight entries on `pad_index`."""
    m = w.shape[0]
    blocks = w.reshape(m, -1, width)
    ptr, rows, idx, val = [0], [], [], []
    for r0, r1 in pairs:
        ent = [np.flatnonzero(blocks[r].any(axis=1)) if r >= 0 else np.zeros(0, int) for r in (r0, r1)]
        length = max(len(ent[0]), len(ent[1]), pad_to)
        for e in range(length):
            for side, r in enumerate((r0, r1)):
                if e < len(ent[side]):
                    idx.append(ent[side][e])
                    val.extend(blocks[r, ent[side][e]])
                else:
                    idx.append(pad_index)
                    val.extend([0.0] * width)
        ptr.append(ptr[-1] + length)
        rows.extend([r0, r1])
    return (np.array(ptr, np.int32), np.array(rows, np.int32).reshape(-1), np.array(idx, np.uint16),
            np.array(val, np.float32))


def run_spmm(kt, name, *, m=13, k=37, n=33, density=0.3, bias=True, residual=True, singles=1, pair_range=None,
             kblocks=None, pad_to=0, zero_weights=False, no_pairs=False, seed=0):
    """y = start + W x on the rows of pairs [pair_begin, pair_end): start = bias + residual (y when accumulating);
    every other row keeps y's initial value. kblocks: index boundaries of K-blocks run one after the other, every
    block after the first with accumulate=True (bias and residual still passed: accumulate must ignore them)."""
    width = 1 if name == "spmm_csr" else 4
    rng = np.random.default_rng(seed)
    nidx = -(-k // width)  # columns (width 1) or 4-blocks (width 4)
    kp = width * nidx  # rows of x: K rounded up to whole 4-blocks, the padding rows zero (kernels.h)
    mask = rng.random((m, nidx)) < density
    if m >= 2:
        mask[0], mask[1] = False, True  # an empty row paired with a full one (the last index included): padding
    w = (rng.standard_normal((m, kp)) * np.repeat(mask, width, axis=1)).astype(F32)
    if zero_weights:
        w[:] = 0
    x = rng.standard_normal((kp, n)).astype(F32)
    x[k:] = 0  # partial 4-block: weights past K (non-zero here) meet zero rows of x
    b = rng.standard_normal(m).astype(F32) if bias else None
    r = rng.standard_normal((m, n)).astype(F32) if residual else None
    y0 = rng.standard_normal((m, n)).astype(F32)  # rows the call does not write must keep it
    rest = [int(i) for i in rng.permutation(np.arange(2, m))] if m > 2 else []
    alone, rest = rest[:singles], rest[singles:]
    pairs = [] if no_pairs else [(0, 1)] + [(a, c) for a, c in zip(rest[::2], rest[1::2])] + [(a, -1) for a in alone]
    if len(rest) % 2 and not no_pairs:
        pairs.append((rest[-1], -1))
    pairs = [pairs[i] for i in rng.permutation(len(pairs))] if pairs else pairs
    begin, end = pair_range if pair_range else (0, len(pairs))
    bounds = kblocks or [0, nidx]
    y = y0
    for blk, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        ptr, rows, idx, val = paired_view(np.ascontiguousarray(w[:, lo * width:hi * width]), width, pairs,
                                          pad_to=pad_to, pad_index=hi - lo - 1 if hi > lo else 0)
        y = kt.spmm(name, ptr, rows, idx, val, begin, end, np.ascontiguousarray(x[lo * width:hi * width]), m, y=y,
                    bias=b, residual=r, accumulate=blk > 0)
    written = sorted({row for pair in pairs[begin:end] for row in pair if row >= 0})
    w64, x64 = w.astype(F64), x.astype(F64)
    start = (0 if b is None else b.astype(F64)[:, None]) + (0 if r is None else r.astype(F64))
    want = y0.astype(F64)
    tol = np.zeros((m, n))  # unwritten rows: bitwise y0
    full = start + w64 @ x64
    mag = np.abs(w64) @ np.abs(x64) + (0 if b is None else np.abs(b)[:, None]) + (0 if r is None else np.abs(r))
    roundings = np.count_nonzero(w, axis=1)[:, None] + (b is not None) + (r is not None)
    want[written] = full[written]
    tol[written] = (gamma(roundings) * mag + FLOOR)[written]
    return [Check(f"y ({len(written)} of {m} rows written)", y, want, tol)]


def spmm_cases(name):
    s = partial(run_spmm, name=name)
    cases = {
        "zero_pairs": partial(s, no_pairs=True, m=5),
        "empty_pair_range": partial(s, pair_range=(2, 2)),
        "pair_subrange": partial(s, pair_range=(1, 4)),
        "one_token": partial(s, n=1),
        **{f"n_{n}": partial(s, n=n, seed=n) for n in PARTIAL_TOKENS},
        "single_row_pairs": partial(s, m=14, singles=5),
        "pairs_padded_with_zero_weights": partial(s, pad_to=40, density=0.1),
        "zero_weights": partial(s, zero_weights=True, pad_to=3),
        "no_bias_no_residual": partial(s, bias=False, residual=False),
        "bias_without_residual": partial(s, residual=False),
        "residual_without_bias": partial(s, bias=False),
        "long_rows": partial(s, k=1500, n=17, m=6, density=0.6),
    }
    # K-blocks (in index units: columns or 4-blocks) of one and two indices, uneven ones, the last of one index.
    nidx = -(-130 // (1 if name == "spmm_csr" else 4))
    cases["many_k_blocks"] = partial(s, k=130, n=65, seed=7, kblocks=[0, 1, 3, nidx // 3, nidx // 2, nidx - 1, nidx])
    if name == "spmm_block4":
        cases["partial_4_block"] = partial(s, k=10, n=17, density=0.8)  # 3 blocks, the last one half past K
    return cases


# ------------------------------------------------------------------------------------------------------------------
# finish_rows (FinishRowsFn)
# ------------------------------------------------------------------------------------------------------------------


def pre_activation_values(rng, shape):
    """Values over every regime of the activations: saturation (|v| up to 60), the curved middle, tiny and 0."""
    special = np.array([0.0, 1e-30, -1e-30, 1e-7, -1e-7, 9.0, -9.0, 60.0, -60.0, 0.5, -0.5])
    v = np.concatenate([special, np.linspace(-12, 12, 97), rng.standard_normal(max(0, math.prod(shape))) * 3])
    return rng.permutation(v)[:math.prod(shape)].reshape(shape).astype(F32)


def run_finish_rows(kt, *, activation="gelu", m=9, n=65, rows=(0, 2, 3, 5, 8), bias=True, residual=True, seed=0):
    """act(y + bias) + residual on the listed rows (negative entries skipped); every other row unchanged."""
    rng = np.random.default_rng(seed)
    y = pre_activation_values(rng, (m, n))
    b = (rng.standard_normal(m) * 0.5).astype(F32) if bias else None
    r = rng.standard_normal((m, n)).astype(F32) if residual else None
    out = kt.finish_rows(np.array(rows, np.int32), y, bias=b, activation=activation, residual=r)
    listed = sorted({row for row in rows if row >= 0})
    pre = y.astype(F64) + (0 if b is None else b.astype(F64)[:, None])
    res = None if r is None else r.astype(F64)
    want = y.astype(F64)
    tol = np.zeros((m, n))
    full = activation_ref(pre, activation) + (0 if res is None else res)
    bound = epilogue_bound(np.abs(y) + (0 if b is None else np.abs(b)[:, None]), int(b is not None), pre, activation,
                           res)
    want[listed], tol[listed] = full[listed], bound[listed]
    return [Check(f"y ({activation}, rows {list(rows)})", out, want, tol)]


def finish_rows_cases():
    s = run_finish_rows
    return {
        **{f"act_{a}": partial(s, activation=a) for a in ACTIVATIONS},
        "residual_without_bias": partial(s, bias=False),
        "bias_without_residual": partial(s, residual=False, activation="tanh"),
        "empty_row_list": partial(s, rows=()),
        "negative_rows_skipped": partial(s, rows=(-1, 4, -7, 0, -1)),
        "all_rows": partial(s, rows=tuple(range(9)), activation="gelu_tanh"),
        "one_token": partial(s, n=1),
        **{f"n_{n}": partial(s, n=n, seed=n) for n in PARTIAL_TOKENS},
    }


# ------------------------------------------------------------------------------------------------------------------
# gemm / gemm_wt (GemmFn)
# ------------------------------------------------------------------------------------------------------------------


def run_gemm(kt, name, *, m=13, k=37, n=33, activation="none", bias=True, residual=True, kblocks=None,
             accumulate_onto=False, seed=0):
    """act(W x + bias) + residual, W [m, k] (gemm) or given transposed (gemm_wt). kblocks: K cut into blocks run
    one after the other, every block after the first with accumulate=True and no epilogue (attention's use): one
    long product. accumulate_onto: one call with accumulate=True onto y0, given a full epilogue that the Epilogue
    contract says a later block ignores: y = y0 + W x."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((m, k)) / math.sqrt(max(k, 1))).astype(F32)
    x = (rng.standard_normal((k, n)) * 1.5).astype(F32)
    b = (rng.standard_normal(m) * 0.5).astype(F32) if bias else None
    r = rng.standard_normal((m, n)).astype(F32) if residual else None
    y0 = rng.standard_normal((m, n)).astype(F32) if accumulate_onto else None

    def wt(part):
        return np.ascontiguousarray(part if name == "gemm" else part.T)

    if kblocks:
        # The first block alone carries the epilogue (bias + residual, no activation: they start the sums).
        y = None
        for blk, (lo, hi) in enumerate(zip(kblocks[:-1], kblocks[1:])):
            first = blk == 0
            y = kt.gemm(name, wt(w[:, lo:hi]), np.ascontiguousarray(x[lo:hi]), y=y, bias=b if first else None,
                        residual=r if first else None, accumulate=not first)
    else:
        y = kt.gemm(name, wt(w), x, y=y0, bias=b, activation=activation, residual=r, accumulate=accumulate_onto)
    w64, x64 = w.astype(F64), x.astype(F64)
    if accumulate_onto:  # a later block: only the products are added
        b, r, activation = None, None, "none"
    pre = w64 @ x64 + (0 if b is None else b.astype(F64)[:, None]) + (0 if y0 is None else y0.astype(F64))
    mag = np.abs(w64) @ np.abs(x64) + (0 if b is None else np.abs(b)[:, None]) + (0 if y0 is None else np.abs(y0))
    res = None if r is None else r.astype(F64)
    want = activation_ref(pre, activation) + (0 if res is None else res)
    tol = epilogue_bound(mag, k + (b is not None) + (y0 is not None), pre, activation, res)
    return [Check(f"y ({m}x{k}x{n}, {activation})", y, want, tol)]


def gemm_cases(name):
    s = partial(run_gemm, name=name)
    return {
        "m_zero": partial(s, m=0),
        "k_zero": partial(s, k=0, activation="gelu"),  # an empty product: act(bias) + residual
        "m_one": partial(s, m=1),
        "m_lt_row_tile": partial(s, m=5),  # fewer rows than the 6-row register tile
        "m_not_row_tile_multiple": partial(s, m=19),
        "one_token": partial(s, n=1),
        **{f"n_{n}": partial(s, n=n, seed=n) for n in PARTIAL_TOKENS},
        **{f"act_{a}": partial(s, activation=a, n=65) for a in ACTIVATIONS},
        "residual_without_bias": partial(s, bias=False, activation="relu"),
        "residual_without_bias_no_act": partial(s, bias=False),
        "bias_without_residual": partial(s, residual=False, activation="tanh"),
        "no_epilogue": partial(s, bias=False, residual=False),
        "long_k": partial(s, k=700, n=17),
        "many_k_blocks": partial(s, k=130, n=65, bias=False, residual=False, kblocks=[0, 1, 5, 64, 67, 129, 130]),
        "many_k_blocks_epilogue_first": partial(s, k=130, n=17, kblocks=[0, 3, 64, 127, 130]),
        "accumulate_ignores_epilogue": partial(s, accumulate_onto=True, activation="relu", n=20),
        "accumulate_ignores_bias": partial(s, accumulate_onto=True, residual=False, n=20),
    }


# ------------------------------------------------------------------------------------------------------------------
# layer_norm (LayerNormFn)
# ------------------------------------------------------------------------------------------------------------------


def exact_mean_columns(x):
    """Columns whose float32 mean is exact whatever the kernel does: constant c, every partial sum j c (j <= f) a
    float32, and both fl(fl(f c) * fl(1 / f)) and fl(f c / f) equal to c."""
    f = x.shape[0]
    const = (x == x[:1]).all(axis=0)
    c = x[0].astype(F64)
    multiples_exact = np.all([(np.float32(j * c) == j * c) for j in range(1, f + 1)], axis=0)
    total = (c * f).astype(F32)
    scaled = (total * F32(1.0 / f)) == x[0]
    divided = (total / F32(f)) == x[0]
    return const & multiples_exact & scaled & divided


def layer_norm_bound(x, g, beta, eps):
    """Reference and element-wise bound for LayerNorm down each column (first-order error propagation).

    mean: a sum of f terms times fl(1 / f), |err| <= dm = gamma_{f+1} sum|x| / f (0 for exact_mean_columns);
    centred d^ = fl(x - m): |d^ - d| <= dd = dm + u (|d| + dm); since sum d = 0 the shift of the mean enters the
    sum of squares only squared: |sum d^2 - sum d^2| <= f dm^2 + (2u + u^2)(sum d^2 + f dm^2), plus gamma_f for the
    sum itself; the variance (x fl(1 / f), + eps) adds 3 rounding steps; 1 / sqrt(v) has half the relative error of v
    plus two roundings (rho); y = fl(fl(d^ r) g + beta) adds two (one with an fma) on top of the propagated errors.
    """
    f = x.shape[0]
    x64, g64, b64, eps64 = x.astype(F64), g.astype(F64)[:, None], beta.astype(F64)[:, None], float(F32(eps))
    mean = x64.mean(axis=0)
    d = x64 - mean
    sq = (d * d).sum(axis=0)
    var = sq / f
    s = np.sqrt(var + eps64)
    z = d / s
    want = z * g64 + b64
    dm = np.where(exact_mean_columns(x), 0.0, gamma(f + 1) * np.abs(x64).sum(axis=0) / f)
    dd = dm + U * (np.abs(d) + dm)
    squares = sq + f * dm**2
    dq = f * dm**2 + (2 * U + U * U) * squares + gamma(f) * squares * (1 + 3 * U)
    dv = dq / f * (1 + 3 * U) + 3 * U * var + U * eps64
    assert np.all(dv < var + eps64), "ill-conditioned column: the bound would check nothing"
    rho = 0.5 * dv / (var + eps64 - dv) + 2 * U
    tol = np.abs(g64) * ((1 + rho) * dd / s + np.abs(z) * (rho + 2 * U))
    tol = (tol + U * np.abs(want)) * (1 + 4 * U) + FLOOR
    return want, tol


def run_layer_norm(kt, *, f=40, n=33, eps=1e-12, columns=None, seed=0):
    """(x - mean) / sqrt(var + eps) * gamma + beta down each token column; columns: {token: values} overrides."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((f, n)) * rng.uniform(0.1, 10, size=n) + rng.uniform(-3, 3, size=n)).astype(F32)
    for t, values in (columns or {}).items():
        x[:, t] = values
    g = (1 + 0.2 * rng.standard_normal(f)).astype(F32)
    beta = (0.3 * rng.standard_normal(f)).astype(F32)
    y = kt.layer_norm(x, g, beta, eps)
    want, tol = layer_norm_bound(x, g, beta, eps)
    return [Check(f"y ({f} features x {n} tokens)", y, want, tol)]


def layer_norm_cases():
    s = run_layer_norm
    rng = np.random.default_rng(3)
    return {
        "one_feature": partial(s, f=1),  # x - mean = 0: beta
        "one_token": partial(s, n=1),
        **{f"n_{n}": partial(s, n=n, seed=n) for n in PARTIAL_TOKENS},
        "many_features": partial(s, f=768, n=17),
        # Variance 0: eps alone keeps 1 / sqrt finite, and the output is beta exactly (the means are exact here).
        "constant_columns": partial(s, n=20, columns={0: 2.5, 3: -1024.0, 7: 0.0, 19: 3 * 2.0**-20}),
        # E[x^2] of these columns overflows float32 (1e38 * 40): only the centred two-pass variance stays finite.
        "large_magnitude": partial(s, n=17, columns={
            0: 1e19 + 1e18 * rng.standard_normal(40), 5: 2e18 * rng.standard_normal(40),
            16: -1e19 + 3e17 * rng.standard_normal(40), 9: 1e-19 * rng.standard_normal(40) + 1e-18}),
    }


# ------------------------------------------------------------------------------------------------------------------
# softmax_cols (SoftmaxColsFn)
# ------------------------------------------------------------------------------------------------------------------


def softmax_bound(s, scale, keep):
    """Reference and element-wise bound for the column softmax over kept rows (masked rows exactly 0).

    Softmax is shift-invariant, so the kernel's max only has to be some kept score: what matters is the error of
    each logit z~_i = fl(fl(s_i * scale) - M): the product's rounding (exact below) plus u |z~_i|, plus EXP_REL for
    exp. Perturbing logits by delta_i moves p_i by a factor within exp(+-(|delta_i| + max_j |delta_j|)); the sum
    adds gamma_{kept} and the reciprocal and product one rounding each. Logits below -87 give an exp under
    e^-87 ~ 1.7e-38 (vexp clamps there): such entries are bounded by FLOOR and left out of the max.
    """
    kept = keep.astype(bool)
    s32, sc = s.astype(F32), F32(scale)
    with np.errstate(over="ignore", invalid="ignore"):
        prod32 = (s32 * sc).astype(F64)  # fl(s * scale), as the kernels form it
    prod64 = s32.astype(F64) * F64(sc)  # exact
    p = prod64[kept]
    e = np.exp(p - p.max(axis=0))
    want = np.zeros(s.shape)
    want[kept] = e / e.sum(axis=0)
    with np.errstate(invalid="ignore"):
        z = prod32[kept] - prod32[kept].max(axis=0)
    live = z >= -87
    delta = np.where(live, np.abs(prod32[kept] - p) + U * np.abs(z) + EXP_REL, 0.0)
    rel = np.expm1(delta + delta.max(axis=0)) * (1 + gamma(int(kept.sum()) + 2)) + gamma(int(kept.sum()) + 2)
    tol = np.zeros(s.shape)  # masked rows: exactly 0
    tol[kept] = np.where(live, want[kept] * rel, 0.0) + FLOOR
    return want, tol


def run_softmax(kt, *, m=20, n=33, scale=0.125, keep=None, fill=None, seed=0):
    """fill(rng, s, keep) may overwrite scores; keep: the kept rows (default: all but a few)."""
    rng = np.random.default_rng(seed)
    s = (rng.standard_normal((m, n)) * 8).astype(F32)
    if keep is None:
        keep = np.ones(m, np.uint8)
        keep[1::5] = 0
    keep = np.asarray(keep, np.uint8)
    if fill:
        fill(rng, s, keep)
    out = kt.softmax_cols(s, scale, keep)
    want, tol = softmax_bound(s, scale, keep)
    return [Check(f"p ({m} rows, {int(keep.sum())} kept, {n} tokens, scale {scale})", out, want, tol)]


def _masked_extremes(rng, s, keep):
    # Masked rows hold values that would overflow or poison the max and the sum if they were read.
    extremes = np.array([FLT_MAX, -FLT_MAX, np.inf, -np.inf, np.nan, 3e38], F32)
    masked = np.flatnonzero(keep == 0)
    s[masked] = np.resize(extremes, (len(masked), s.shape[1]))


def _large_scores(rng, s, keep):
    # Scores near the float32 limit and large offsets: differences that overflow to -inf, exact large logits.
    s[:, 0] = np.linspace(-FLT_MAX, FLT_MAX, s.shape[0])
    s[:, 1] = rng.standard_normal(s.shape[0]) * 1e30
    s[:, 2] = 1e4 + rng.standard_normal(s.shape[0]) * 3  # z = s - max exact (Sterbenz): only exp rounds
    s[:, 3] = 1e6 + rng.standard_normal(s.shape[0]) * 20
    s[:, 4] = FLT_MAX * np.where(np.arange(s.shape[0]) % 2, 1, 0.5)


def _very_negative_scores(rng, s, keep):
    # Every kept score of a column below -3e38 (still finite, no overflow anywhere): the largest must still win.
    s[:] = -FLT_MAX + rng.uniform(0, 1e37, s.shape)
    s[5, :] = -3.1e38


def softmax_cases():
    s = run_softmax
    one = np.zeros(20, np.uint8)
    one[7] = 1
    return {
        "one_row": partial(s, m=1, keep=[1]),
        "one_token": partial(s, n=1),
        **{f"n_{n}": partial(s, n=n, seed=n) for n in PARTIAL_TOKENS},
        "all_rows_kept": partial(s, keep=np.ones(20, np.uint8)),
        "all_but_one_masked": partial(s, keep=one, fill=_masked_extremes),
        "masked_rows_extreme": partial(s, fill=_masked_extremes),
        "large_magnitude_scores": partial(s, scale=1.0, fill=_large_scores),
        "very_negative_scores": partial(s, scale=1.0, n=17, fill=_very_negative_scores),
        "scale_zero_uniform": partial(s, scale=0.0),  # attention's all-keys-masked fallback: uniform weights
        "many_rows": partial(s, m=300, n=17),
    }


# ------------------------------------------------------------------------------------------------------------------
# fma_peak (FmaPeakFn)
# ------------------------------------------------------------------------------------------------------------------


def run_fma_peak(kt, iterations=(0, 1, 2, 7, 1000, 4096)):
    """The flop count only (never timed): 2 x lanes x accumulators per iteration, so proportional to iterations."""
    flops = np.array([kt.fma_peak(i) for i in iterations], F64)
    per_iteration = kt.fma_peak(1)
    lanes = LANES[kt.isa]
    accumulators = per_iteration / (2 * lanes)
    return [
        Check("flops(i) = i * flops(1)", flops, np.array(iterations, F64) * per_iteration, per_isa=True),
        Check(f"flops(1) = 2 x {lanes} lanes x a whole number >= 1 of accumulators (got {accumulators})",
              np.array(accumulators >= 1 and accumulators == int(accumulators)), np.array(True), per_isa=True),
    ]


# ------------------------------------------------------------------------------------------------------------------
# quantize (QuantizeFn)
# ------------------------------------------------------------------------------------------------------------------


def quantize_reference(x):
    """QuantizeFn's float32 steps (kernels.h): lo = min(0, min x), hi = max(0, max x), scale = (hi - lo) / 255
    (1 when 0), inv = 1 / scale, zero = clamp(nearbyint(-lo inv), 0, 255), q = clamp(nearbyint(x inv) + zero,
    0, 255), a NaN giving 0 (and left out of the range); feature rows past k hold zero."""
    x = np.asarray(x, F32)
    k, n = x.shape
    with np.errstate(all="ignore"):
        lo = np.fmin(np.fmin.reduce(x, axis=0), F32(0))
        hi = np.fmax(np.fmax.reduce(x, axis=0), F32(0))
        scale = ((hi - lo) / F32(255)).astype(F32)
        scale = np.where(scale > 0, scale, F32(1)).astype(F32)
        inv = (F32(1) / scale).astype(F32)
        zero = np.clip(np.rint((-lo) * inv), 0, 255).astype(F32)
        q = np.rint(x * inv).astype(F32) + zero
        q = np.nan_to_num(np.clip(q, 0, 255), nan=0).astype(np.uint8)
    blocks = -(-k // 4)
    padded = np.broadcast_to(zero.astype(np.uint8), (4 * blocks, n)).copy()
    padded[:k] = q
    return padded.reshape(blocks, 4, n).transpose(0, 2, 1).copy(), scale, zero.astype(np.int32)


def run_quantize(kt, *, k=37, n=33, fill=None, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((k, n)) * rng.uniform(0.01, 30, size=n)).astype(F32)
    if fill:
        fill(rng, x)
    q, scale, zero = kt.quantize(x)
    rq, rscale, rzero = quantize_reference(x)
    return [Check("q", q, rq), Check("scale", scale, rscale), Check("zero", zero, rzero)]


def _all_zero_tokens(rng, x):
    x[:, ::3] = 0  # scale 1, zero point 0, q 0


def _all_negative_tokens(rng, x):
    x[:, 1::2] = -np.abs(x[:, 1::2]) - 1e-3  # hi = 0: zero point 255


def _all_positive_tokens(rng, x):
    x[:, ::2] = np.abs(x[:, ::2]) + 1e-3  # lo = 0: zero point 0


def _constant_tokens(rng, x):
    x[:, 0], x[:, 1], x[:, 2] = 3.5, -0.75, 1e-3


def _wide_range(rng, x):
    x[:, :5] *= np.array([1e30, 1e-30, 1e20, 1e-20, 1e5], F32)


def _nan_tokens(rng, x):
    x[0, 0], x[5, 1], x[-1, 2] = np.nan, np.nan, np.nan
    x[:, 3] = np.nan


def quantize_cases():
    s = run_quantize
    return {
        "one_token": partial(s, n=1),
        **{f"n_{n}": partial(s, n=n, seed=n) for n in PARTIAL_TOKENS},
        "k_one": partial(s, k=1),
        "k_not_multiple_of_4": partial(s, k=10, n=17),  # the last block's two padding bytes hold the zero point
        "all_zero_tokens": partial(s, fill=_all_zero_tokens),
        "all_negative_tokens": partial(s, fill=_all_negative_tokens),
        "all_positive_tokens": partial(s, fill=_all_positive_tokens),
        "constant_tokens": partial(s, fill=_constant_tokens),
        "wide_range": partial(s, fill=_wide_range),
        "nan_gives_zero": partial(s, fill=_nan_tokens),
        "many_features": partial(s, k=770, n=65),
    }


# ------------------------------------------------------------------------------------------------------------------
# spmm_block4_i8 (SpmmI8Fn)
# ------------------------------------------------------------------------------------------------------------------


def fma_f32(a, b, c):
    """fl32(a * b + c) with one rounding (float32 inputs): a * b is exact in float64 (24 + 24 bits); TwoSum gives the
    rounding error of the float64 sum, and rounding to odd (a non-zero error sets the last bit) makes the final
    rounding to float32, 29 bits shorter, the correct single rounding."""
    p = a.astype(F64) * b.astype(F64)
    c = np.broadcast_to(c, p.shape).astype(F64)
    s = p + c
    bb = s - p
    err = (p - (s - bb)) + (c - bb)
    even = (s.view(np.uint64) & 1) == 0
    s = np.where((err != 0) & even, np.nextafter(s, np.where(err > 0, np.inf, -np.inf)), s)
    return s.astype(F32)


def int8_reference(ptr, col, val, w_scale, row_range, xq, x_scale, x_zero, bias=None, residual=None):
    """SpmmI8Fn exactly: acc = sum s8 * u8 in integers, centred = acc - zero[t] * w_sum[r] (an int32),
    y = fma(float(centred), fl(scale[t] * w_scale[r]), bias[r]) (+ residual); rows outside the range stay 0."""
    rows, n = len(ptr) - 1, xq.shape[1]
    y = np.zeros((rows, n), F32)
    xq64, val64 = xq.astype(np.int64), val.astype(np.int64)
    for r in range(*row_range):
        js = np.arange(ptr[r], ptr[r + 1])
        acc = np.einsum("jtq,jq->t", xq64[col[js]], val64[js]) if js.size else np.zeros(n, np.int64)
        centred = acc - x_zero.astype(np.int64) * int(val64[js].sum())
        assert np.all(np.abs(centred) < 2**31) and np.all(np.abs(acc) < 2**31), "the contract's sums are int32"
        v = fma_f32(centred.astype(F32), (x_scale * w_scale[r]).astype(F32), F32(0 if bias is None else bias[r]))
        if residual is not None:
            v = (v + residual[r]).astype(F32)
        y[r] = v
    return y


def split_unbounded(ptr, col, val):
    """Splits every block whose byte pairs are unbounded (positive weights of a pair summing past 128 or negative
    ones past -128) into two blocks on the same inputs: w / 2 rounded toward zero, and the rest (kernels.h)."""
    def bounded(a, b):
        return max(a, 0) + max(b, 0) <= 128 and min(a, 0) + min(b, 0) >= -128

    new_ptr, new_col, new_val = [0], [], []
    for r in range(len(ptr) - 1):
        for j in range(ptr[r], ptr[r + 1]):
            v = val[j].astype(np.int32)
            if bounded(*v[:2]) and bounded(*v[2:]):
                new_col.append(col[j])
                new_val.append(v)
            else:
                half = np.trunc(v / 2).astype(np.int32)
                new_col += [col[j], col[j]]
                new_val += [half, v - half]
        new_ptr.append(len(new_col))
    return (np.array(new_ptr, np.int32), np.array(new_col, np.uint16),
            np.array(new_val, np.int32).reshape(-1, 4).astype(np.int8))


def run_spmm_i8(kt, *, rows=11, k=37, n=33, density=0.4, row_range=None, bias=True, residual=True,
                extreme=False, split_everywhere=False, seed=0):
    """extreme: every weight -128 or 127 and activations at 0 or 255 (quantized bytes given directly): the largest
    byte-pair sums, which a bounded-pairs table (AVX2 vpmaddubsw, saturating 16 bits) takes only split. The split
    weights run on the tables that need them (and on all of them with split_everywhere): same sums, same y."""
    rng = np.random.default_rng(seed)
    kb = -(-k // 4)
    mask = rng.random((rows, kb)) < density
    if rows >= 2:
        mask[0], mask[1] = False, True  # an empty row (y = bias + residual) and a full one
    ptr = np.concatenate([[0], np.cumsum(mask.sum(axis=1))]).astype(np.int32)
    col = np.concatenate([np.flatnonzero(mk) for mk in mask]).astype(np.uint16)
    if extreme:
        val = np.where(rng.random((len(col), 4)) < 0.7, -128, 127).astype(np.int8)
        val[: min(len(val), 3)] = -128
        xq = np.where(rng.random((kb, n, 4)) < 0.8, 255, 0).astype(np.uint8)
        x_scale = rng.uniform(0.01, 0.1, n).astype(F32)
        x_zero = rng.choice(np.array([0, 255, 128], np.int32), n).astype(np.int32)
    else:
        val = rng.integers(-128, 128, (len(col), 4)).astype(np.int8)
        x = (rng.standard_normal((k, n)) * rng.uniform(0.1, 5, n) + rng.uniform(-1, 1, n)).astype(F32)
        xq, x_scale, x_zero = quantize_reference(x)  # padding bytes past K hold the zero point
    w_scale = rng.uniform(1e-3, 0.05, rows).astype(F32)
    b = rng.standard_normal(rows).astype(F32) if bias else None
    r = rng.standard_normal((rows, n)).astype(F32) if residual else None
    rr = row_range or (0, rows)
    want = int8_reference(ptr, col, val, w_scale, rr, xq, x_scale, x_zero, b, r)
    use = split_unbounded(ptr, col, val) if (kt.int8_bounded_pairs or split_everywhere) else (ptr, col, val)
    y = kt.spmm_block4_i8(*use, w_scale, rr[0], rr[1], xq, x_scale, x_zero, bias=b, residual=r)
    return [Check(f"y (rows {rr[0]}..{rr[1]} of {rows}, {len(use[1])} blocks, {n} tokens)", y, want)]


def spmm_i8_cases():
    s = run_spmm_i8
    return {
        "empty_row_range": partial(s, row_range=(4, 4)),
        "row_subrange": partial(s, row_range=(1, 6)),
        "one_token": partial(s, n=1),
        **{f"n_{n}": partial(s, n=n, seed=n) for n in PARTIAL_TOKENS},
        "odd_row_count": partial(s, rows=7, row_range=(0, 7)),  # rows two at a time, one left alone
        "partial_4_block": partial(s, k=10, n=17, density=0.9),  # weights on the padding bytes meet the zero point
        "extreme_weights_and_activations": partial(s, extreme=True, n=65, density=0.7),
        "split_blocks_on_every_table": partial(s, extreme=True, split_everywhere=True, n=17),
        "residual_without_bias": partial(s, bias=False),
        "bias_without_residual": partial(s, residual=False),
        "no_bias_no_residual": partial(s, bias=False, residual=False),
        "many_blocks": partial(s, rows=5, k=2048, n=65, density=0.9, extreme=True),
    }


# ------------------------------------------------------------------------------------------------------------------
# The table of cases
# ------------------------------------------------------------------------------------------------------------------

CASES = {
    "spmm_csr": spmm_cases("spmm_csr"),
    "spmm_block4": spmm_cases("spmm_block4"),
    "finish_rows": finish_rows_cases(),
    "gemm": gemm_cases("gemm"),
    "gemm_wt": gemm_cases("gemm_wt"),
    "layer_norm": layer_norm_cases(),
    "softmax_cols": softmax_cases(),
    "fma_peak": {"proportional_to_iterations": run_fma_peak},
    "quantize": quantize_cases(),
    "spmm_block4_i8": spmm_i8_cases(),
}

SIMD_ISAS = tuple(i for i in ISAS if i != "scalar")

#: (kernel, case) -> (the ISAs it fails on, why): known kernel bugs, documented by strict xfails.
KNOWN_BUGS: dict = {}


def _case_params():
    for kernel, cases in CASES.items():
        for case in cases:
            for isa in ISAS:
                bug = KNOWN_BUGS.get((kernel, case))
                marks = [pytest.mark.xfail(strict=True, reason=bug[1])] if bug and isa in bug[0] else []
                yield pytest.param(kernel, case, isa, id=f"{kernel}-{case}-{isa}", marks=marks)


def test_every_kernel_of_the_table_has_cases():
    # A kernel added to SPARSEBERT_KERNELS without cases here (or one removed) fails the suite.
    assert set(CASES) == set(_core.KERNELS), (sorted(set(_core.KERNELS) - set(CASES)),
                                               sorted(set(CASES) - set(_core.KERNELS)))
    assert all(CASES.values()), [k for k, v in CASES.items() if not v]
    assert ISAS[-1] == "scalar" and set(ISAS) <= set(LANES), ISAS


@pytest.mark.parametrize("kernel, case, isa", list(_case_params()))
def test_kernel_case(kernel, case, isa):
    run = CASES[kernel][case]
    kt = _core.Kernels(isa)
    assert kt.isa == isa
    checks = run(kt)
    assert checks
    for c in checks:
        assert_check(f"{kernel}/{case}/{isa}: {c.what}", c.got, c.want, c.tol)
    if isa == "scalar":
        return
    # The scalar table is the oracle: bitwise for exact kernels; else each result is within its bound of the
    # exact value, so the two are within the sum of the bounds.
    for c, o in zip(checks, run(_core.Kernels("scalar"))):
        if not c.per_isa:
            assert_check(f"{kernel}/{case}: {isa} vs scalar: {c.what}", c.got, o.got.astype(F64) if c.tol is not None
                         else o.got, None if c.tol is None else 2 * np.asarray(c.tol))


# ------------------------------------------------------------------------------------------------------------------
# Argument validation: a clear ValueError / TypeError, never a crash
# ------------------------------------------------------------------------------------------------------------------


def _spmm_args(**over):
    # Two pairs over m = 3 rows and x of 5 rows: (0, 1) with two entries, (2, -1) with one.
    args = dict(name="spmm_csr", ptr=np.array([0, 2, 3], np.int32), rows=np.array([0, 1, 2, -1], np.int32),
                idx=np.array([0, 1, 4, 2, 3, 0], np.uint16), val=np.arange(6, dtype=F32),
                pair_begin=0, pair_end=2, x=np.ones((5, 7), F32), m=3)
    args.update(over)
    return args


def _i8_args(**over):
    args = dict(ptr=np.array([0, 1, 3], np.int32), col=np.array([0, 1, 0], np.uint16),
                val=np.array([[1, -2, 3, 4], [5, 6, 7, 8], [9, 10, 0, 0]], np.int8),
                w_scale=np.array([0.1, 0.2], F32), row_begin=0, row_end=2, xq=np.full((2, 5, 4), 7, np.uint8),
                x_scale=np.ones(5, F32), x_zero=np.zeros(5, np.int32))
    args.update(over)
    return args


x4 = np.ones((4, 6), F32)
BAD_CALLS = {
    "spmm: idx past the rows of x": (lambda kt: kt.spmm(**_spmm_args(idx=np.array([0, 1, 5, 2, 3, 0], np.uint16))),
                                     ValueError, "past the rows of x"),
    "spmm_block4: a block past the rows of x": (
        lambda kt: kt.spmm(**_spmm_args(name="spmm_block4", val=np.zeros(24, F32))), ValueError, "past the rows"),
    "spmm: row out of range": (lambda kt: kt.spmm(**_spmm_args(rows=np.array([0, 3, 2, -1], np.int32))),
                               ValueError, "rows must be in"),
    "spmm: first row of a pair -1": (lambda kt: kt.spmm(**_spmm_args(rows=np.array([-1, 1, 2, -1], np.int32))),
                                     ValueError, "rows must be in"),
    "spmm: pair range past the pairs": (lambda kt: kt.spmm(**_spmm_args(pair_end=3)), ValueError, "pair range"),
    "spmm: pair range reversed": (lambda kt: kt.spmm(**_spmm_args(pair_begin=2, pair_end=1)), ValueError, "pair"),
    "spmm: ptr decreasing": (lambda kt: kt.spmm(**_spmm_args(ptr=np.array([0, 2, 1], np.int32))), ValueError, "ptr"),
    "spmm: ptr past the entries": (lambda kt: kt.spmm(**_spmm_args(ptr=np.array([0, 2, 4], np.int32))),
                                   ValueError, "ptr"),
    "spmm: val of the wrong length": (lambda kt: kt.spmm(**_spmm_args(val=np.zeros(5, F32))), ValueError, "val"),
    "spmm: idx int32": (lambda kt: kt.spmm(**_spmm_args(idx=np.array([0, 1, 4, 2, 3, 0], np.int32))),
                        TypeError, "uint16"),
    "spmm: x float64": (lambda kt: kt.spmm(**_spmm_args(x=np.ones((5, 7)))), TypeError, "float32"),
    "spmm: unknown kernel": (lambda kt: kt.spmm(**_spmm_args(name="gemm")), ValueError, "spmm_csr"),
    "finish_rows: row past y": (lambda kt: kt.finish_rows(np.array([0, 4], np.int32), x4), ValueError, "rows"),
    "finish_rows: y float64": (lambda kt: kt.finish_rows(np.array([0], np.int32), np.ones((4, 6))), TypeError,
                               "float32"),
    "finish_rows: unknown activation": (lambda kt: kt.finish_rows(np.array([0], np.int32), x4, activation="swish"),
                                        ValueError, "swish"),
    "finish_rows: bias of the wrong length": (lambda kt: kt.finish_rows(np.array([0], np.int32), x4,
                                                                        bias=np.ones(3, F32)), ValueError, "bias"),
    "gemm: x rows != k": (lambda kt: kt.gemm("gemm", np.ones((3, 5), F32), x4), ValueError, "x"),
    "gemm_wt: x rows != k": (lambda kt: kt.gemm("gemm_wt", np.ones((5, 3), F32), x4), ValueError, "x"),
    "gemm: w float64": (lambda kt: kt.gemm("gemm", np.ones((3, 4)), x4), TypeError, "float32"),
    "gemm: residual of the wrong shape": (lambda kt: kt.gemm("gemm", np.ones((3, 4), F32), x4,
                                                             residual=np.ones((3, 5), F32)), ValueError, "residual"),
    "gemm: unknown kernel": (lambda kt: kt.gemm("spmm_csr", np.ones((3, 4), F32), x4), ValueError, "gemm"),
    "layer_norm: gamma of the wrong length": (lambda kt: kt.layer_norm(x4, np.ones(3, F32), np.ones(4, F32), 1e-5),
                                              ValueError, "gamma"),
    "layer_norm: eps 0": (lambda kt: kt.layer_norm(x4, np.ones(4, F32), np.ones(4, F32), 0.0), ValueError, "eps"),
    "layer_norm: no features": (lambda kt: kt.layer_norm(np.ones((0, 6), F32), np.ones(0, F32), np.ones(0, F32),
                                                         1e-5), ValueError, "features"),
    "softmax_cols: keep all zero": (lambda kt: kt.softmax_cols(x4, 1.0, np.zeros(4, np.uint8)), ValueError, "keep"),
    "softmax_cols: keep bool": (lambda kt: kt.softmax_cols(x4, 1.0, np.ones(4, bool)), TypeError, "uint8"),
    "softmax_cols: keep of the wrong length": (lambda kt: kt.softmax_cols(x4, 1.0, np.ones(5, np.uint8)),
                                               ValueError, "keep"),
    "fma_peak: negative iterations": (lambda kt: kt.fma_peak(-1), ValueError, "iterations"),
    "quantize: x float64": (lambda kt: kt.quantize(np.ones((4, 6))), TypeError, "float32"),
    "quantize: x 1-D": (lambda kt: kt.quantize(np.ones(6, F32)), ValueError, "shape"),
    "quantize: no features": (lambda kt: kt.quantize(np.ones((0, 6), F32)), ValueError, "features"),
    "spmm_block4_i8: col past xq": (lambda kt: kt.spmm_block4_i8(**_i8_args(col=np.array([0, 2, 0], np.uint16))),
                                    ValueError, "col"),
    "spmm_block4_i8: row range past the rows": (lambda kt: kt.spmm_block4_i8(**_i8_args(row_end=3)), ValueError,
                                                "row range"),
    "spmm_block4_i8: ptr not ending at the blocks": (
        lambda kt: kt.spmm_block4_i8(**_i8_args(ptr=np.array([0, 1, 2], np.int32))), ValueError, "ptr"),
    "spmm_block4_i8: val uint8": (lambda kt: kt.spmm_block4_i8(**_i8_args(val=np.ones((3, 4), np.uint8))),
                                  TypeError, "int8"),
    "spmm_block4_i8: x_zero of the wrong length": (
        lambda kt: kt.spmm_block4_i8(**_i8_args(x_zero=np.zeros(4, np.int32))), ValueError, "x_zero"),
}


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("call", list(BAD_CALLS))
def test_bad_arguments_raise(call, isa):
    fn, exc, fragment = BAD_CALLS[call]
    with pytest.raises(exc, match=fragment):
        fn(_core.Kernels(isa))


# Inputs outside the int8 contract (zero points are in [0, 255]; the sums are exact in int32) that the binding
# accepts: the kernels then overflow int32 (undefined behaviour in the scalar C++) and return wrapped values.
def _i8_sums_past_int32(kt):
    nb = 16449  # 16449 blocks x 4 x -128 x 255 = -2147581440 < -2^31 (split for a bounded-pairs table: same sums)
    ptr, col, val = split_unbounded(np.array([0, nb], np.int32), np.arange(nb, dtype=np.uint16),
                                    np.full((nb, 4), -128, np.int8))
    return kt.spmm_block4_i8(ptr, col, val, np.ones(1, F32), 0, 1, np.full((nb, 1, 4), 255, np.uint8),
                             np.ones(1, F32), np.zeros(1, np.int32))


OUTSIDE_THE_INT8_CONTRACT = {
    "spmm_block4_i8: x_zero outside [0, 255]": lambda kt: kt.spmm_block4_i8(
        **_i8_args(x_zero=np.full(5, 2**30, np.int32))),
    "spmm_block4_i8: sums past int32": _i8_sums_past_int32,
}


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("call", list(OUTSIDE_THE_INT8_CONTRACT))
def test_int8_inputs_outside_the_contract_raise(call, isa):
    with pytest.raises(ValueError):
        OUTSIDE_THE_INT8_CONTRACT[call](_core.Kernels(isa))


def test_unknown_isa_raises():
    with pytest.raises(ValueError, match="neon"):
        _core.Kernels("neon")


@pytest.mark.parametrize("isa", ISAS)
def test_unbounded_pairs_only_where_the_table_takes_them(isa):
    # A byte pair of -128s: 2 x 255 x -128 leaves the 16 bits of AVX2's vpmaddubsw. A bounded-pairs table refuses
    # it; any other table computes it exactly.
    kt = _core.Kernels(isa)
    args = _i8_args(val=np.array([[-128, -128, 0, 0], [5, 6, 7, 8], [9, 10, 0, 0]], np.int8),
                    xq=np.full((2, 5, 4), 255, np.uint8))
    if kt.int8_bounded_pairs:
        with pytest.raises(ValueError, match="bounded byte pairs"):
            kt.spmm_block4_i8(**args)
    else:
        want = int8_reference(args["ptr"], args["col"], args["val"], args["w_scale"], (0, 2), args["xq"],
                              args["x_scale"], args["x_zero"])
        assert_check("y", kt.spmm_block4_i8(**args), want, None)
