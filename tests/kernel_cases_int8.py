"""Kernel-table cases of the int8 kernels, checked bitwise against exact references written from kernels.h:
quantize, spmm_block4_i8."""

from __future__ import annotations

from functools import partial

import numpy as np

from kernel_checks import F32, F64, PARTIAL_TOKENS, Check


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
