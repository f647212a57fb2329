"""Kernel-table cases of the sparse and dense products and their epilogue pass: spmm_csr, spmm_block4,
finish_rows, gemm, gemm_wt."""

from __future__ import annotations

import math
from functools import partial

import numpy as np

from conftest import activation_ref
from kernel_checks import ACTIVATIONS, F32, F64, FLOOR, PARTIAL_TOKENS, Check, epilogue_bound, gamma


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
        # The buffers' row stride is n rounded up to 16: 64, the engine's tile, takes the kernels' specialised path
        # (kernels.h, kSpecialisedStride), the other counts the general one.
        "tile_stride": partial(s, n=64, seed=64),
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
