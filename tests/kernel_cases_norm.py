"""Kernel-table cases of the reductions down token columns and the FMA peak loop: layer_norm, softmax_cols,
fma_peak."""

from __future__ import annotations

from functools import partial

import numpy as np

from kernel_checks import EXP_REL, F32, F64, FLOOR, FLT_MAX, LANES, PARTIAL_TOKENS, Check, U, gamma


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
    adds gamma_{kept} and the reciprocal and product one rounding each. Logits below -69 may be raised to -69 (the
    SIMD kernels floor them there, so that no probability reaches the denormal range): such entries are bounded by
    SOFTMAX_FLOOR = e^-69 ~ 1e-30 and left out of the max.
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
    live = z >= -69
    delta = np.where(live, np.abs(prod32[kept] - p) + U * np.abs(z) + EXP_REL, 0.0)
    rel = np.expm1(delta + delta.max(axis=0)) * (1 + gamma(int(kept.sum()) + 2)) + gamma(int(kept.sum()) + 2)
    tol = np.zeros(s.shape)  # masked rows: exactly 0
    tol[kept] = np.where(live, want[kept] * rel + FLOOR, SOFTMAX_FLOOR)
    return want, tol


SOFTMAX_FLOOR = float(np.exp(F64(-69))) * 1.001  # the floor as float32 computes it, times 1 / sum <= 1


def sharp_columns(rng, s, keep):
    # One score per column far above the rest (a sharp attention head): the others' probabilities are e^-100 and
    # less (the SIMD kernels give the floor, e^-69 / sum, rather than denormals: test_kernels checks that).
    s[:] = rng.uniform(-400, -100, s.shape)
    s[0] = 0


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
        "sharp_columns": partial(s, scale=1.0, keep=np.ones(20, np.uint8), fill=sharp_columns, seed=3),
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
