"""bf16 attention (``SparseEngine.load(attention="bf16")``): attention's two products with operands rounded to bf16
and fp32 sums, on AMX.

The kernels (csrc/kernels/bf16.h) are checked against references written here from the contract: the three
packers cell by cell (an independent numpy bf16 rounding, special values, cells outside the block untouched), the
fast packers bitwise against the reference ones, and the product against an exact float64 product of the rounded
operands within a per-cell bound on fp32 summation. The engine is checked against PyTorch on the real MiniLM
weights and on random models whose shapes hit the edges of the packing (head dims and sequences that are not
multiples of 16, 32 or 64, a sequence whose mask keeps no key, int8 linears), and against a PyTorch attention that
rounds Q, K, V and the probabilities to bf16 the same way, which the engine must follow to fp32 precision:
that is what shows the rounding happens where the contract says, not just that the error is small. Then
determinism, threads, fork, the error paths and the pipeline's pass-through.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import sparsebert
from sparsebert import SparseEngine, _native
from sparsebert.engine import bf16_attention_unavailable

from conftest import (
    PARITY_ATOL,
    apply_plan_,
    load_minilm,
    make_model,
    max_abs_diff_unpadded,
    min_token_cosine_unpadded,
    random_inputs,
    torch_forward,
)

_core = _native.core()
#: None where bf16 attention runs here, else why not (the same string the engine's ValueError carries).
UNAVAILABLE = bf16_attention_unavailable()
needs_bf16 = pytest.mark.skipif(UNAVAILABLE is not None, reason=str(UNAVAILABLE))
# The reference table runs everywhere; the fast (AMX) one only where the CPU, the OS and this process allow it.
TABLES = [pytest.param("fast", marks=needs_bf16), "reference"]
KINDS = ("rows", "transposed", "pairs")


# ------------------------------------------------------------------------------------------------------------
# An independent bf16 rounding and the packers' layouts, in numpy
# ------------------------------------------------------------------------------------------------------------


def bf16_bits(x) -> np.ndarray:
    """float32 -> bf16 bit patterns: round to nearest even on the bit pattern, denormals to signed zero, NaNs to
    a NaN (the upper half, quieted: rounding could carry a NaN with a small payload into inf). Callers check NaN
    cells for NaN-ness only."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    exponent, mantissa = (u >> 23) & 0xFF, u & 0x7FFFFF
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) & 0xFFFF
    rounded = np.where((exponent == 0xFF) & (mantissa != 0), (u >> 16) | 0x40, rounded)
    return np.where((exponent == 0) & (mantissa != 0), (u >> 16) & 0x8000, rounded).astype(np.uint16)


def bf16_values(bits) -> np.ndarray:
    """bf16 bit patterns -> their values, as float64 (exact)."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32).astype(np.float64)


def is_bf16_nan(bits) -> np.ndarray:
    bits = np.asarray(bits, dtype=np.uint16)
    return ((bits & 0x7F80) == 0x7F80) & ((bits & 0x7F) != 0)


def need(kind: str, rows: int, cols: int) -> tuple[int, int]:
    """The least (dst_rows, ldd) holding a packed rows x cols block."""
    return {"rows": (rows, cols), "transposed": (cols, rows), "pairs": ((rows + 1) // 2, 2 * cols)}[kind]


def place(kind: str, block: np.ndarray, dst_rows: int, ldd: int, fill: int) -> np.ndarray:
    """The contract's layout of a rows x cols uint16 block in a dst_rows x ldd array filled with ``fill``
    (pairs: with odd rows the last pair's second half is 0)."""
    rows, cols = block.shape
    out = np.full((dst_rows, ldd), fill, dtype=np.uint16)
    if kind == "rows":
        out[:rows, :cols] = block
    elif kind == "transposed":
        out[:cols, :rows] = block.T
    else:
        pair_rows = (rows + 1) // 2
        even = np.zeros((2 * pair_rows, cols), dtype=np.uint16)
        even[:rows] = block
        # dst[r // 2][2 c + r % 2] = src[r][c]
        out[:pair_rows, :2 * cols] = even.reshape(pair_rows, 2, cols).transpose(0, 2, 1).reshape(pair_rows, 2 * cols)
    return out


def assert_packed(got: np.ndarray, kind: str, src: np.ndarray, fill: int, what: str):
    """Every cell of ``got``: the fill outside the block, the bf16 rounding of its source inside; a NaN source
    only needs a NaN."""
    assert got.dtype == np.uint16, f"{what}: dtype {got.dtype}"
    expected = place(kind, bf16_bits(src), *got.shape, fill)
    nan_cells = place(kind, np.isnan(src).astype(np.uint16), *got.shape, 0).astype(bool)
    assert is_bf16_nan(got[nan_cells]).all(), f"{what}: a NaN did not stay NaN: {got[nan_cells]}"
    wrong = (got != expected) & ~nan_cells
    if wrong.any():
        r, c = np.argwhere(wrong)[0]
        raise AssertionError(f"{what}: {int(wrong.sum())} cells wrong, first at [{r}, {c}]: got {got[r, c]:#06x}, "
                             f"expected {expected[r, c]:#06x} (fill {fill:#06x})")


def bits_f32(*patterns: int) -> np.ndarray:
    return np.array(patterns, dtype=np.uint32).view(np.float32)


# float32 bit pattern -> the bf16 pattern it must round to (None: any NaN). Written out by hand, so the numpy
# rounding above is checked too.
SPECIALS = {
    0x00000000: 0x0000,  # +0
    0x80000000: 0x8000,  # -0
    0x3F800000: 0x3F80,  # 1
    0x7F800000: 0x7F80,  # +inf
    0xFF800000: 0xFF80,  # -inf
    0x7FC00000: None,  # quiet NaN
    0xFFC00000: None,  # negative quiet NaN
    0x7F800001: None,  # signalling NaN, payload in the low half only: must not become inf
    0x7FA00000: None,  # signalling NaN
    0x00000001: 0x0000,  # smallest denormal -> +0
    0x007FFFFF: 0x0000,  # largest denormal -> +0 (rounding would give the smallest normal: flushed first)
    0x807FFFFF: 0x8000,  # -largest denormal -> -0
    0x00800000: 0x0080,  # smallest normal stays
    0x80800000: 0x8080,
    0x7F7FC99E: 0x7F80,  # 3.4e38 rounds up to +inf
    0xFF7FC99E: 0xFF80,  # -3.4e38 -> -inf
    0x7F7FFFFF: 0x7F80,  # FLT_MAX -> inf
    0x7F7F7FFF: 0x7F7F,  # just below the tie: the largest finite bf16
    0x7F7F8000: 0x7F80,  # tie with an odd upper half at the top: up, to inf
    0x3F808000: 0x3F80,  # tie, even upper half: stays
    0x3F818000: 0x3F82,  # tie, odd upper half: up to even
    0xBF808000: 0xBF80,  # negative ties alike
    0xBF818000: 0xBF82,
    0x3FFF8000: 0x4000,  # tie, odd: the carry runs into the exponent (2.0)
    0x3F808001: 0x3F81,  # just above a tie: up
    0x3F817FFF: 0x3F81,  # just below a tie: down
}
SPECIAL_VALUES = bits_f32(*SPECIALS)


def test_numpy_rounding_matches_the_hand_written_table():
    got = bf16_bits(SPECIAL_VALUES)
    for (pattern, want), bits in zip(SPECIALS.items(), got):
        if want is None:
            assert is_bf16_nan(bits), f"{pattern:#010x} -> {bits:#06x}, not a NaN"
        else:
            assert bits == want, f"{pattern:#010x} -> {bits:#06x}, expected {want:#06x}"


def random_block(shape, seed) -> np.ndarray:
    """Values over 12 decades, signs mixed, with every special value sprinkled in where there is room."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 10.0 ** rng.uniform(-6, 6, shape)).astype(np.float32)
    flat = x.reshape(-1)
    where = rng.choice(flat.size, min(flat.size, len(SPECIAL_VALUES)), replace=False)
    flat[where] = SPECIAL_VALUES[rng.permutation(len(SPECIAL_VALUES))[:where.size]]
    return x


# ------------------------------------------------------------------------------------------------------------
# Packers
# ------------------------------------------------------------------------------------------------------------

# 1 x 1, odd rows (pairs' zero half), columns off every vector width, whole 16 / 32 / 64 blocks, and blocks of more
# than one 32-row or 16-column step of the transposing packer.
PACK_SHAPES = [(1, 1), (1, 17), (3, 5), (7, 1), (5, 33), (2, 31), (16, 16), (32, 32), (64, 64), (16, 48), (31, 47),
               (33, 100), (65, 20), (64, 128)]


@pytest.mark.parametrize("table", TABLES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", PACK_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_pack_edge_shapes(shape, kind, table):
    src = random_block(shape, seed=shape[0] * 1000 + shape[1])
    rows, cols = need(kind, *shape)
    # A wider, taller destination with an odd row length: the packer must stay inside its block and use ldd.
    got = _core.bf16_pack(kind, src, rows + 2, cols + 7, table=table)
    assert got.shape == (rows + 2, cols + 7)
    assert_packed(got, kind, src, 0xFFFF, f"{table}/{kind}/{shape}")


@pytest.mark.parametrize("table", TABLES)
@pytest.mark.parametrize("kind", KINDS)
def test_pack_special_values(kind, table):
    # Every special value in every position of a 16-lane vector (and both halves of a pair), 3 rows (odd).
    n = len(SPECIAL_VALUES)
    src = np.stack([np.roll(SPECIAL_VALUES, i) for i in range(3)])
    rows, cols = need(kind, 3, n)
    # A second fill: a cell the packer skipped would go unseen where its expected value equals the fill.
    for fill in (0xFFFF, 0x1234):
        got = _core.bf16_pack(kind, src, rows + 1, cols + 3, fill=fill, table=table)
        assert_packed(got, kind, src, fill, f"{table}/{kind}/specials/fill={fill:#x}")
    # The hand-written table, straight: row 0 packed as rows is the specials in order.
    got = _core.bf16_pack("rows", SPECIAL_VALUES[None, :], 1, n, table=table)[0]
    for (pattern, want), bits in zip(SPECIALS.items(), got):
        assert is_bf16_nan(bits) if want is None else bits == want, f"{table}: {pattern:#010x} -> {bits:#06x}"


@needs_bf16
@pytest.mark.parametrize("kind", KINDS)
def test_fast_packers_equal_the_reference(kind):
    # Bit for bit, NaN payloads included, and the cells neither may touch.
    for seed, shape in enumerate([(1, 1), (3, 29), (17, 64), (33, 100), (64, 128), (70, 45), (128, 10)]):
        src = random_block(shape, seed)
        rows, cols = need(kind, *shape)
        fast = _core.bf16_pack(kind, src, rows + 1, cols + 5, table="fast")
        ref = _core.bf16_pack(kind, src, rows + 1, cols + 5, table="reference")
        np.testing.assert_array_equal(fast, ref, err_msg=f"{kind}/{shape}")


# ------------------------------------------------------------------------------------------------------------
# The product
# ------------------------------------------------------------------------------------------------------------


def gemm_tolerance(a64: np.ndarray, b64: np.ndarray) -> np.ndarray:
    """Per cell bound on |fp32 sum - exact sum| for C = A B with bf16 operands.

    A product of two bf16 values (8 significant bits each) has at most 16 significant bits: exact in fp32, so the
    only errors are the k additions, each rounded to nearest even (TDPBF16PS and the reference loop both round
    RNE): |err| <= gamma_{k-1} * sum_p |a_ip| |b_pj| <= k * 2^-24 * sum |a||b|, in any order of the sums (tiles,
    pairs, FMA). Output denormals may be flushed (AMX does): at most 2^-126 per addition. The float64 reference's
    own error (<= k * 2^-53 * sum) fits in the slack between gamma_{k-1} and k * 2^-24. This is half the
    k * 2^-23 bound that would also allow truncating adds, and per cell, so a row or column of small values gets
    a small tolerance.
    """
    k = a64.shape[1]
    return k * 2.0**-24 * (np.abs(a64) @ np.abs(b64)) + k * 2.0**-126


GEMM_SHAPES = [(16, 16, 32), (32, 48, 64), (48, 80, 96), (128, 128, 64), (64, 128, 512)]


@pytest.mark.parametrize("table", TABLES)
@pytest.mark.parametrize("m,n,k", GEMM_SHAPES)
def test_gemm_against_exact_product(m, n, k, table):
    rng = np.random.default_rng(m * n + k)
    # Rows of A and columns of B over 4 decades, some exact zeros: the per-cell tolerance follows each cell.
    a = (rng.standard_normal((m, k)) * 10.0 ** rng.uniform(-2, 2, (m, 1))).astype(np.float32)
    b = (rng.standard_normal((k, n)) * 10.0 ** rng.uniform(-2, 2, (1, n))).astype(np.float32)
    a[rng.random((m, k)) < 0.05] = 0
    a_bits = _core.bf16_pack("rows", a, m, k, table=table)
    b_pairs = _core.bf16_pack("pairs", b, k // 2, 2 * n, table=table)
    c = _core.bf16_gemm(a_bits, b_pairs, m, n, k, table=table)
    assert c.dtype == np.float32 and c.shape == (m, n)
    a64, b64 = bf16_values(bf16_bits(a)), bf16_values(bf16_bits(b))
    exact = a64 @ b64
    tol = gemm_tolerance(a64, b64)
    err = np.abs(c - exact)
    worst = np.unravel_index(np.argmax(err / tol), err.shape)
    assert (err <= tol).all(), (f"{table} {m}x{n}x{k}: {int((err > tol).sum())} cells out; worst {worst}: "
                                f"|err| {err[worst]:.3g} > {tol[worst]:.3g}")
    # The bound is tight enough to see a wrong rounding: B truncated instead of rounded moves most cells past it.
    truncated = ((b.view(np.uint32) >> 16) << 16).view(np.float32).astype(np.float64)
    assert (np.abs(a64 @ truncated - exact) > tol).mean() > 0.5


@pytest.mark.parametrize("table", TABLES)
def test_gemm_uses_strides_and_reads_only_its_block(table):
    # Operands inside larger arrays whose extra rows and columns are NaN: lda and ldb come from the arrays'
    # widths, and a read outside the m x k and k/2 x 2n blocks would turn results into NaN.
    m, n, k = 32, 48, 64
    rng = np.random.default_rng(7)
    a, b = rng.standard_normal((m, k)).astype(np.float32), rng.standard_normal((k, n)).astype(np.float32)
    big_a = np.full((m + 5, k + 40), 0x7FC0, dtype=np.uint16)
    big_b = np.full((k // 2 + 3, 2 * n + 24), 0x7FC0, dtype=np.uint16)
    big_a[:m, :k] = _core.bf16_pack("rows", a, m, k, table=table)
    big_b[:k // 2, :2 * n] = _core.bf16_pack("pairs", b, k // 2, 2 * n, table=table)
    c = _core.bf16_gemm(big_a, big_b, m, n, k, table=table)
    a64, b64 = bf16_values(bf16_bits(a)), bf16_values(bf16_bits(b))
    assert np.isfinite(c).all()
    assert (np.abs(c - a64 @ b64) <= gemm_tolerance(a64, b64)).all()
    # A sub-block product of the same arrays: the first 16 rows, 16 columns, 32 sums.
    c = _core.bf16_gemm(big_a, big_b, 16, 16, 32, table=table)
    assert (np.abs(c - a64[:16, :32] @ b64[:32, :16]) <= gemm_tolerance(a64[:16, :32], b64[:32, :16])).all()


@pytest.mark.parametrize("table", TABLES)
def test_kernel_argument_errors(table):
    a = np.zeros((32, 64), np.uint16)
    b = np.zeros((32, 96), np.uint16)
    src = np.ones((4, 5), np.float32)
    with pytest.raises(TypeError, match="uint16"):
        _core.bf16_gemm(a.astype(np.float32), b, 32, 48, 64, table=table)
    with pytest.raises(TypeError, match="uint16"):
        _core.bf16_gemm(a, b.astype(np.int16), 32, 48, 64, table=table)
    with pytest.raises(TypeError):
        _core.bf16_gemm(a.tolist(), b, 32, 48, 64, table=table)
    for m, n, k in [(24, 48, 64), (32, 40, 64), (32, 48, 48), (0, 48, 64), (32, 48, 0), (-16, 48, 64)]:
        with pytest.raises(ValueError, match="multiples"):
            _core.bf16_gemm(a, b, m, n, k, table=table)
    with pytest.raises(ValueError, match="a must hold"):
        _core.bf16_gemm(a[:16], b, 32, 48, 64, table=table)  # too few rows
    with pytest.raises(ValueError, match="a must hold"):
        _core.bf16_gemm(a[:, :32], b, 32, 48, 64, table=table)  # too few columns
    with pytest.raises(ValueError, match="b must hold"):
        _core.bf16_gemm(a, b[:16], 32, 48, 64, table=table)
    with pytest.raises(ValueError, match="b must hold"):
        _core.bf16_gemm(a, b[:, :64], 32, 48, 64, table=table)
    with pytest.raises(ValueError):
        _core.bf16_gemm(a[0], b, 32, 48, 64, table=table)  # 1-D
    with pytest.raises(TypeError, match="float32"):
        _core.bf16_pack("rows", src.astype(np.float64), 4, 5, table=table)
    with pytest.raises(ValueError, match="kind"):
        _core.bf16_pack("columns", src, 4, 5, table=table)
    for kind, (rows, cols) in [("rows", (3, 5)), ("rows", (4, 4)), ("transposed", (4, 4)), ("transposed", (5, 3)),
                               ("pairs", (1, 10)), ("pairs", (2, 9))]:
        with pytest.raises(ValueError, match="dst too small"):
            _core.bf16_pack(kind, src, rows, cols, table=table)
    with pytest.raises(ValueError):
        _core.bf16_pack("rows", src[0], 4, 5, table=table)  # 1-D
    with pytest.raises(ValueError):
        _core.bf16_pack("rows", src[:0], 4, 5, table=table)  # no rows


def test_unknown_table():
    with pytest.raises(ValueError, match="'amx'"):
        _core.bf16_pack("rows", np.ones((1, 1), np.float32), 1, 1, table="amx")
    with pytest.raises(ValueError, match="'amx'"):
        _core.bf16_gemm(np.zeros((16, 32), np.uint16), np.zeros((16, 32), np.uint16), 16, 16, 32, table="amx")


@pytest.mark.skipif(UNAVAILABLE is None, reason="bf16 attention is available here")
def test_fast_table_refused_with_the_reason():
    with pytest.raises(ValueError, match="not available") as info:
        _core.bf16_pack("rows", np.ones((1, 1), np.float32), 1, 1, table="fast")
    assert UNAVAILABLE in str(info.value)


# ------------------------------------------------------------------------------------------------------------
# PyTorch with bf16 attention: Q, K, V and the probabilities rounded to bf16 (torch rounds to nearest even), the
# products' sums in fp32, as the engine's contract says
# ------------------------------------------------------------------------------------------------------------


def bf16_attention_forward(monkeypatch, model, inputs: dict) -> list[np.ndarray]:
    """transformers' eager BERT with bf16 attention operands: every hidden state ([embeddings, layer 1, ...])."""
    import torch
    from transformers.models.bert import modeling_bert

    if not hasattr(modeling_bert, "eager_attention_forward"):
        pytest.skip("this transformers has no modeling_bert.eager_attention_forward to replace")
    calls = []

    def rounded(t):
        return t.to(torch.bfloat16).to(torch.float32)

    def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        calls.append(1)
        scaling = query.size(-1) ** -0.5 if scaling is None else scaling
        scores = torch.matmul(rounded(query), rounded(key).transpose(2, 3)) * scaling
        if attention_mask is not None:
            scores = scores + attention_mask
        probs = torch.softmax(scores, dim=-1)
        return torch.matmul(rounded(probs), rounded(value)).transpose(1, 2).contiguous(), probs

    with monkeypatch.context() as patch:
        patch.setattr(modeling_bert, "eager_attention_forward", attention)
        kwargs = {k: torch.from_numpy(np.asarray(v, dtype=np.int64)) for k, v in inputs.items()}
        with torch.no_grad():
            bert = getattr(model, "bert", model)
            states = bert(**kwargs, output_hidden_states=True).hidden_states
    assert len(calls) == model.config.num_hidden_layers  # the replacement really ran
    return [s.numpy() for s in states]


def token_diffs(actual, expected, mask) -> np.ndarray:
    """Per unpadded token, the max |actual - expected| over its features."""
    m = np.asarray(mask).astype(bool)
    return np.abs(np.asarray(actual, np.float64) - np.asarray(expected, np.float64)).max(-1)[m]


# Engine against bf16 PyTorch after the first layer (later layers mix in the first one's differences): both round
# the same fp32 values to bf16, so they differ only where a value within fp32 noise of a rounding boundary rounds
# the other way, which moves a few tokens by up to ~2e-3 and leaves the rest at fp32 noise. Hence a median over
# tokens (of each token's max |diff|): rounding in the wrong place or the wrong way moves the median by orders of
# magnitude, as measured with PyTorch changed to match such an engine:
#   random models, per sequence: 7e-7 .. 2.9e-6; probabilities not rounded 3e-4 .. 2.7e-3, truncated 3.8e-3 ..
#   5.9e-3 (except in the one-token sequence, whose probability 1 is exact, and, for truncation, the no-key
#   sequence, whose 1/70 truncates and rounds alike);
#   MiniLM, all tokens: 4.5e-6 (longer sequences and 12 heads: more boundary cases); probabilities not rounded
#   5.3e-4, truncated 2.2e-3.
EMULATION_MEDIAN_ATOL = 1e-5
MINILM_EMULATION_MEDIAN_ATOL = 2e-5
#: bf16 attention against fp32 attention after one layer, for contrast: measured median 1e-3 (MiniLM),
#: 2.2e-3 .. 5.5e-3 (random models).
BF16_EFFECT_MEDIAN_MIN = 1e-4


# ------------------------------------------------------------------------------------------------------------
# Real MiniLM weights
# ------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm_bf16(minilm_dir, minilm_batch, tmp_path_factory):
    """MiniLM exported (fp32), its PyTorch outputs, and fp32 / bf16 attention engine outputs with hidden states."""
    import types

    model = load_minilm(minilm_dir)
    path = tmp_path_factory.mktemp("minilm_bf16") / "minilm.sbert"
    sparsebert.export(model, path, verbose=False)
    ref = torch_forward(model, minilm_batch)
    out = {}
    if UNAVAILABLE is None:
        for attention in ("fp32", "bf16"):
            engine = SparseEngine.load(path, attention=attention)
            assert engine.attention == attention
            out[attention] = engine.run(minilm_batch, output_hidden_states=True)
    return types.SimpleNamespace(model=model, path=path, ref=ref, out=out)


@needs_bf16
def test_minilm_bf16_attention_vs_torch(minilm_bf16, minilm_batch):
    mask = minilm_batch["attention_mask"]
    ref, fp32, bf16 = minilm_bf16.ref, minilm_bf16.out["fp32"], minilm_bf16.out["bf16"]
    # fp32 attention is unchanged by the feature.
    assert max_abs_diff_unpadded(fp32["last_hidden_state"], ref["last_hidden_state"], mask) <= PARITY_ATOL
    # Measured 8.50e-3 (12 sentences, 6 layers of bf16 rounding); minimum token cosine 0.9999921.
    diff = max_abs_diff_unpadded(bf16["last_hidden_state"], ref["last_hidden_state"], mask)
    assert diff <= 1e-2, diff
    cosine = min_token_cosine_unpadded(bf16["last_hidden_state"], ref["last_hidden_state"], mask)
    assert cosine >= 0.99999, cosine
    # Measured 6.0e-4 on the pooler (tanh of a dense layer on [CLS]).
    assert np.abs(bf16["pooler_output"] - ref["pooler_output"]).max() <= 1e-3
    # The bf16 path really ran: not fp32's result bit for bit.
    assert not np.array_equal(bf16["last_hidden_state"], fp32["last_hidden_state"])
    np.testing.assert_array_equal(bf16["hidden_states"][-1], bf16["last_hidden_state"])


@needs_bf16
def test_minilm_first_layer_follows_bf16_rounding(minilm_bf16, minilm_batch, monkeypatch):
    mask = minilm_batch["attention_mask"]
    rounded = bf16_attention_forward(monkeypatch, minilm_bf16.model, minilm_batch)
    bf16 = minilm_bf16.out["bf16"]["hidden_states"]
    np.testing.assert_array_equal(bf16[0], minilm_bf16.out["fp32"]["hidden_states"][0])  # embeddings: no attention
    median = float(np.median(token_diffs(bf16[1], rounded[1], mask)))
    assert median <= MINILM_EMULATION_MEDIAN_ATOL, median
    # ... and clearly not fp32 attention (the fp32 engine: PyTorch to 1e-5).
    fp32_median = float(np.median(token_diffs(bf16[1], minilm_bf16.out["fp32"]["hidden_states"][1], mask)))
    assert fp32_median > BF16_EFFECT_MEDIAN_MIN, fp32_median


# ------------------------------------------------------------------------------------------------------------
# Random models at the packing's edges
# ------------------------------------------------------------------------------------------------------------

# name -> (config, lengths, max |bf16 engine - PyTorch| on last_hidden_state's unpadded tokens). Every batch ends
# with a sequence whose mask keeps no key (length 0: uniform attention over all its positions, as PyTorch's
# additive mask gives). Tolerances: the measured value (in the comment) plus ~25%. Two layers of random weights
# (initializer_range 0.2: sharp attention) amplify bf16's 2^-9 relative rounding more than MiniLM's do.
RANDOM_CONFIGS = {
    # head dim 10: neither operand dimension a multiple of 16; sequences of 70, 33, 1, 64 in 70-token rows, so
    # sequences span two 64-token tiles and the packers take them in two pieces.
    "hd10": (dict(hidden_size=40, num_attention_heads=4), [70, 33, 1, 64, 0], 7.5e-3),  # measured 5.89e-3
    # head dim 24: one 16-row block and a half; 32 sums pad 24.
    "hd24": (dict(hidden_size=72, num_attention_heads=3, intermediate_size=100), [70, 33, 1, 64, 0],
             3e-2),  # measured 2.41e-2
    # head dim 17: odd, so Q's last pair has a zero half.
    "hd17": (dict(hidden_size=68, num_attention_heads=4, intermediate_size=130), [70, 33, 1, 64, 0],
             1.8e-2),  # measured 1.46e-2
    # head dim 16 and 128-token sequences: the context product writes straight into the tiles, 64 queries at a time.
    "hd16_tiles": (dict(hidden_size=64, num_attention_heads=4, max_position_embeddings=130), [128, 100, 1, 0],
                   3.6e-2),  # measured 2.88e-2
}
#: The same on every position of the sequence whose mask keeps no key: measured 7.7e-4 .. 1.16e-3.
NO_KEY_ATOL = 1.5e-3

_random_cache: dict = {}


def random_case(name, tmp_path_factory):
    """(torch model, inputs, PyTorch outputs, exported path), built once per module."""
    if name not in _random_cache:
        config, lengths, _ = RANDOM_CONFIGS[name]
        model = make_model("base", seed=40 + list(RANDOM_CONFIGS).index(name), num_hidden_layers=2, **config)
        inputs = random_inputs(model.config.vocab_size, lengths, seed=len(lengths))
        path = tmp_path_factory.mktemp(f"bf16_{name}") / "model.sbert"
        sparsebert.export(model, path, verbose=False)
        _random_cache[name] = (model, inputs, torch_forward(model, inputs), path)
    return _random_cache[name]


def no_key_rows(mask) -> np.ndarray:
    """A mask selecting every position of the sequences whose mask keeps nothing."""
    mask = np.asarray(mask)
    return np.repeat((mask.sum(1) == 0)[:, None], mask.shape[1], axis=1).astype(np.int64)


@needs_bf16
@pytest.mark.parametrize("name", list(RANDOM_CONFIGS))
def test_random_model_bf16_attention(name, tmp_path_factory, monkeypatch):
    model, inputs, ref, path = random_case(name, tmp_path_factory)
    atol = RANDOM_CONFIGS[name][2]
    mask, empty = inputs["attention_mask"], no_key_rows(inputs["attention_mask"])
    assert empty.any()
    fp32 = SparseEngine.load(path, attention="fp32").run(inputs, output_hidden_states=True)
    bf16 = SparseEngine.load(path, attention="bf16").run(inputs, output_hidden_states=True)
    key = "last_hidden_state"
    for rows, what, bound in ((mask, "unpadded", atol), (empty, "no-key sequence", NO_KEY_ATOL)):
        assert max_abs_diff_unpadded(fp32[key], ref[key], rows) <= PARITY_ATOL, what
        diff = max_abs_diff_unpadded(bf16[key], ref[key], rows)
        assert diff <= bound, f"{name}/{what}: bf16 vs PyTorch {diff:.3g} > {bound:g}"
    assert not np.array_equal(bf16[key], fp32[key])
    # After one layer the engine is PyTorch with bf16 operands to fp32 precision, sequence by sequence (see
    # EMULATION_MEDIAN_ATOL), and clearly not fp32 attention.
    rounded = bf16_attention_forward(monkeypatch, model, inputs)
    both = np.maximum(mask, empty)
    for b in range(len(both)):
        median = float(np.median(token_diffs(bf16["hidden_states"][1][b:b + 1], rounded[1][b:b + 1], both[b:b + 1])))
        assert median <= EMULATION_MEDIAN_ATOL, f"{name}, sequence {b}: median vs bf16 PyTorch {median:.3g}"
    fp32_median = float(np.median(token_diffs(bf16["hidden_states"][1], fp32["hidden_states"][1], both)))
    assert fp32_median > BF16_EFFECT_MEDIAN_MIN, fp32_median


@needs_bf16
def test_int8_model_bf16_attention(tmp_path):
    # int8 block4 linears with bf16 attention: the two approximations together stay at int8's own error.
    model = make_model("sequence_classification", seed=44, hidden_size=72, num_attention_heads=3,
                       intermediate_size=100, num_hidden_layers=2)
    apply_plan_(model, "block4")
    inputs = random_inputs(model.config.vocab_size, [70, 33, 1, 64], seed=3)
    ref = torch_forward(model, inputs)
    path = tmp_path / "int8.sbert"
    report = sparsebert.export(model, path, verbose=False, quantize="int8")
    assert {r.layout for r in report.rows if r.name.startswith("layers.")} == {"block4_int8"}
    fp32 = SparseEngine.load(path, attention="fp32").run(inputs)
    bf16 = SparseEngine.load(path, attention="bf16").run(inputs)
    mask, key = inputs["attention_mask"], "last_hidden_state"
    int8_alone = max_abs_diff_unpadded(fp32[key], ref[key], mask)
    both = max_abs_diff_unpadded(bf16[key], ref[key], mask)
    between = max_abs_diff_unpadded(bf16[key], fp32[key], mask)
    # Measured: int8 alone 4.35e-2, int8 with bf16 attention 4.12e-2, between the two engines 3.83e-2 (bf16
    # attention alone, on this model's fp32 export: 4.5e-3; int8's activation quantization turns its small
    # differences into whole quantization steps). Bounds: measured + ~25%.
    assert int8_alone <= 0.055, int8_alone
    assert both <= 0.052, both
    assert between <= 0.048, between
    # Logits: measured 2.59e-2 (int8 alone 3.78e-2).
    assert np.abs(bf16["logits"] - ref["logits"]).max() <= 0.033
    assert not np.array_equal(bf16[key], fp32[key])


# ------------------------------------------------------------------------------------------------------------
# Determinism, threads, fork
# ------------------------------------------------------------------------------------------------------------


def assert_identical(a: dict, b: dict, what: str):
    assert set(a) == set(b), what
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=f"{what}/{key}")


@needs_bf16
def test_bitwise_deterministic(tmp_path_factory):
    model, inputs, _, path = random_case("hd17", tmp_path_factory)
    other = random_inputs(model.config.vocab_size, [9, 40], seed=5)  # other shapes: the bf16 buffers re-zeroed
    one, two = (SparseEngine.load(path, attention="bf16", num_threads=t) for t in (1, 2))
    first = two.run(inputs)
    assert_identical(first, two.run(inputs), "the same inputs again")
    two.run(other)  # a smaller shape in between must leave no trace in the padding of the next
    assert_identical(first, two.run(inputs), "after another shape")
    # Each (sequence, head) is one thread's work from start to end, in a fixed order: the thread count and which
    # thread took which task change nothing.
    assert_identical(first, one.run(inputs), "1 vs 2 threads")
    # Chunks of whole sequences (the padded length stays the batch's): the same again.
    chunked = SparseEngine.load(path, attention="bf16", num_threads=2, max_batch_tokens=70)
    assert_identical(first, chunked.run(inputs), "in chunks of one sequence")


@needs_bf16
@pytest.mark.parametrize("name", ["hd17", "hd16_tiles"])
def test_sequence_alone_equals_its_place_in_the_batch(name, tmp_path_factory):
    # The bf16 operands' padding (to 16 / 32) is zero and masked keys get probability 0, so they add exact zeros:
    # a sequence alone gives its batch result bit for bit, whatever the padded length. In the 128-token batch of
    # hd16_tiles the context goes straight into the tiles; alone, the 100-token sequence takes the other path.
    _, inputs, _, path = random_case(name, tmp_path_factory)
    engine = SparseEngine.load(path, attention="bf16", num_threads=2)
    batched = engine.run(inputs)["last_hidden_state"]
    for b, n in enumerate(inputs["attention_mask"].sum(1)):
        if n:
            alone = engine.run({k: v[b:b + 1, :n] for k, v in inputs.items()})["last_hidden_state"][0]
            np.testing.assert_array_equal(alone, batched[b, :n], err_msg=f"{name}: sequence {b} ({n} tokens)")


@needs_bf16
def test_concurrent_runs_equal_serial_runs(tmp_path_factory):
    model, inputs, _, path = random_case("hd24", tmp_path_factory)
    engine = SparseEngine.load(path, attention="bf16", num_threads=2)
    batches = [inputs, random_inputs(model.config.vocab_size, [17, 5, 3], seed=8)]
    serial = [engine.run(b) for b in batches]
    start = threading.Barrier(2)
    results: list = [[], []]
    errors: list = []

    def work(i):
        try:
            start.wait()
            for _ in range(6):
                results[i].append(engine.run(batches[i]))
        except Exception as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    for i in range(2):
        assert len(results[i]) == 6
        for out in results[i]:
            assert_identical(out, serial[i], f"thread {i}")


@needs_bf16
def test_forked_child_runs_the_parents_engine(tmp_path_factory):
    # AMX permission is granted per process and inherited by fork(): the child runs the parent's engine (whose
    # worker threads it does not have) and a new one, and gets the parent's results.
    _, inputs, _, path = random_case("hd10", tmp_path_factory)
    engine = SparseEngine.load(path, attention="bf16", num_threads=2)
    expected = engine.run(inputs)["last_hidden_state"]
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 4
        try:
            signal.alarm(60)  # a hang kills the child, the parent sees it
            same = np.array_equal(engine.run(inputs)["last_hidden_state"], expected)
            fresh = SparseEngine.load(path, attention="bf16", num_threads=2)
            same = same and np.array_equal(fresh.run(inputs)["last_hidden_state"], expected)
            code = 0 if same else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    outcome = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status)
    assert outcome == 0, f"child: {outcome} (3: other results, 4: an exception, negative: killed by that signal)"
    np.testing.assert_array_equal(engine.run(inputs)["last_hidden_state"], expected)  # the parent carries on


# ------------------------------------------------------------------------------------------------------------
# Choosing the precision, and refusals (these run on every machine)
# ------------------------------------------------------------------------------------------------------------


def test_invalid_attention_values(small_model, monkeypatch):
    monkeypatch.delenv("SPARSEBERT_ATTENTION", raising=False)
    for value in ("BF16", "fp16", "", 16, True):
        with pytest.raises(ValueError, match="attention must be one of fp32, bf16") as info:
            SparseEngine.load(small_model.path, attention=value)
        assert repr(value) in str(info.value)
    monkeypatch.setenv("SPARSEBERT_ATTENTION", "fast")
    with pytest.raises(ValueError, match="SPARSEBERT_ATTENTION='fast'"):
        SparseEngine.load(small_model.path)
    monkeypatch.setenv("SPARSEBERT_ATTENTION", "BF16")  # the spelling is exact, as for the argument
    with pytest.raises(ValueError, match="SPARSEBERT_ATTENTION"):
        SparseEngine.load(small_model.path)
    # An explicit argument wins over the environment, as isa= over SPARSEBERT_ISA.
    assert SparseEngine.load(small_model.path, attention="fp32").attention == "fp32"


def test_default_is_fp32(small_model, monkeypatch):
    monkeypatch.delenv("SPARSEBERT_ATTENTION", raising=False)
    engine = SparseEngine.load(small_model.path)
    assert engine.attention == "fp32"
    assert "attention='fp32'" in repr(engine)
    for value in ("fp32", "", "  "):  # empty or blank: the default
        monkeypatch.setenv("SPARSEBERT_ATTENTION", value)
        assert SparseEngine.load(small_model.path).attention == "fp32"


@needs_bf16
def test_attention_property_and_repr(small_model, monkeypatch):
    monkeypatch.delenv("SPARSEBERT_ATTENTION", raising=False)
    engine = SparseEngine.load(small_model.path, attention="bf16")
    assert engine.attention == "bf16" and engine.isa == "avx512"
    assert "attention='bf16'" in repr(engine) and "isa='avx512'" in repr(engine)
    monkeypatch.setenv("SPARSEBERT_ATTENTION", "bf16")
    assert SparseEngine.load(small_model.path).attention == "bf16"
    assert SparseEngine.load(small_model.path, attention="fp32").attention == "fp32"


@pytest.mark.parametrize("isa", [isa for isa in ("avx2", "scalar") if isa in _native.available_isas()])
def test_bf16_refused_off_the_avx512_path(small_model, isa):
    # Where bf16 is unavailable anyway, the refusal names that first.
    with pytest.raises(ValueError, match=f"not on {isa}" if UNAVAILABLE is None else "not available") as info:
        SparseEngine.load(small_model.path, isa=isa, attention="bf16")
    assert UNAVAILABLE is None or UNAVAILABLE in str(info.value)
    assert SparseEngine.load(small_model.path, isa=isa, attention="fp32").attention == "fp32"


def test_exporter_checks_ignore_the_variable(tmp_path, monkeypatch):
    # The int8 export's calibration compares engines at fp32 attention whatever SPARSEBERT_ATTENTION says, so the
    # variable neither changes what the file records nor makes an export fail where bf16 cannot run (the avx2 path).
    model = make_model("base", seed=2, num_hidden_layers=2)
    apply_plan_(model, "block4")
    sparsebert.export(model, tmp_path / "plain.sbert", verbose=False, quantize="int8")
    monkeypatch.setenv("SPARSEBERT_ATTENTION", "bf16")
    monkeypatch.setenv("SPARSEBERT_ISA", "avx2" if "avx2" in _native.available_isas() else "scalar")
    sparsebert.export(model, tmp_path / "env.sbert", verbose=False, quantize="int8")
    calibration = [sparsebert.format.read_model(tmp_path / name, verify_crc=False).header.get("producer")
                   for name in ("plain.sbert", "env.sbert")]
    assert calibration[0] == calibration[1]


def test_refusal_names_the_variable_it_came_from(tmp_path, monkeypatch):
    # Refused before the file is read (a path that does not exist proves it), naming the environment variable.
    monkeypatch.setenv("SPARSEBERT_ATTENTION", "bf16")
    with pytest.raises(ValueError, match=r"not available.*\(SPARSEBERT_ATTENTION=bf16\)"):
        SparseEngine.load(tmp_path / "never-read.sbert", isa="scalar")


@pytest.mark.skipif(UNAVAILABLE is None, reason="bf16 attention is available here (test_refusal_without_amx_grant "
                                                "refuses it in a child process)")
def test_bf16_refused_with_the_reason(small_model):
    with pytest.raises(ValueError, match="bf16 attention is not available here") as info:
        SparseEngine.load(small_model.path, attention="bf16")
    assert UNAVAILABLE in str(info.value)
    assert SparseEngine.load(small_model.path, attention="fp32").attention == "fp32"


# Run in a child process whose arch_prctl(ARCH_REQ_XCOMP_PERM) fails (a seccomp filter answers EPERM), as on a
# kernel that refuses AMX tile state: the refusal path on a machine that has AMX.
_REFUSED_CHILD = r"""
import ctypes, json, sys
import numpy as np

class Filter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint32)]

class Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Filter))]

LOAD, JUMP_EQ, RET = 0x20, 0x15, 0x06
steps = [(LOAD, 0, 0, 4), (JUMP_EQ, 0, 5, 0xC000003E),  # x86-64 calls only
         (LOAD, 0, 0, 0), (JUMP_EQ, 0, 3, 158),  # arch_prctl
         (LOAD, 0, 0, 16), (JUMP_EQ, 0, 1, 0x1023),  # ARCH_REQ_XCOMP_PERM
         (RET, 0, 0, 0x00050001), (RET, 0, 0, 0x7FFF0000)]  # EPERM; everything else allowed
program = Program(len(steps), (Filter * len(steps))(*[Filter(*s) for s in steps]))
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(38, 1, 0, 0, 0) != 0 or libc.prctl(22, 2, ctypes.byref(program), 0, 0) != 0:
    print(json.dumps({"installed": False}))
    sys.exit(0)
from sparsebert import SparseEngine
from sparsebert import _native
from sparsebert.engine import bf16_attention_unavailable
result = {"installed": True, "reason": bf16_attention_unavailable()}
try:
    SparseEngine.load(sys.argv[1], attention="bf16")
except ValueError as exc:
    result["load"] = str(exc)
try:
    _native.core().bf16_pack("rows", np.ones((1, 1), np.float32), 1, 1, table="fast")
except ValueError as exc:
    result["fast"] = str(exc)
result["fp32"] = SparseEngine.load(sys.argv[1], attention="fp32").attention
result["reference"] = int(_native.core().bf16_pack("rows", np.ones((1, 1), np.float32), 1, 1, table="reference")[0, 0])
print(json.dumps(result))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or os.uname().machine != "x86_64",
                    reason="the AMX grant is a Linux x86-64 system call")
def test_refusal_without_amx_grant(small_model):
    package_root = str(Path(sparsebert.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)}
    env.pop("SPARSEBERT_ATTENTION", None)
    done = subprocess.run([sys.executable, "-c", _REFUSED_CHILD, str(small_model.path)], capture_output=True,
                          text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if not result["installed"]:
        pytest.skip("this kernel does not let a process install a seccomp filter")
    reason = result["reason"]
    assert isinstance(reason, str) and reason, result
    if UNAVAILABLE is None:  # here only the grant was missing: the reason says so
        assert "refused this process AMX tile state" in reason, reason
    assert "bf16 attention is not available here" in result["load"] and reason in result["load"], result
    assert "refused this process AMX tile state" in result["fast"], result
    assert result["fp32"] == "fp32" and result["reference"] == 0x3F80, result


# ------------------------------------------------------------------------------------------------------------
# Pipelines
# ------------------------------------------------------------------------------------------------------------

TEXTS = ["The cat sat on the mat.", "Hello!", "Stock markets fell sharply on Tuesday after the central bank "
         "unexpectedly raised interest rates by half a percentage point."]


@needs_bf16
def test_pipeline_passes_attention_through(exported, monkeypatch):
    monkeypatch.delenv("SPARSEBERT_ATTENTION", raising=False)
    _, _, path = exported("base")
    pipe = sparsebert.pipeline("feature-extraction", path, attention="bf16")
    assert pipe.engine.attention == "bf16"
    # Its results are a bf16 engine's, bit for bit, and not the fp32 pipeline's.
    features = pipe(TEXTS)
    direct = SparseEngine.load(path, attention="bf16").run(pipe.tokenize(TEXTS))["last_hidden_state"]
    fp32_pipe = sparsebert.pipeline("feature-extraction", path)
    assert fp32_pipe.engine.attention == "fp32"
    fp32_features = fp32_pipe(TEXTS)
    for i, (got, fp32) in enumerate(zip(features, fp32_features)):
        np.testing.assert_array_equal(got, direct[i, :len(got)])
        assert not np.array_equal(got, fp32)
    # The environment reaches the pipeline too; an explicit argument wins over it.
    monkeypatch.setenv("SPARSEBERT_ATTENTION", "bf16")
    assert sparsebert.pipeline("feature-extraction", path).engine.attention == "bf16"
    assert sparsebert.pipeline("feature-extraction", path, attention="fp32").engine.attention == "fp32"


def test_pipeline_refuses_invalid_attention(exported, monkeypatch):
    monkeypatch.delenv("SPARSEBERT_ATTENTION", raising=False)
    _, _, path = exported("base")
    with pytest.raises(ValueError, match="'BF16'"):
        sparsebert.pipeline("feature-extraction", path, attention="BF16")
    if UNAVAILABLE is not None:
        with pytest.raises(ValueError, match="not available") as info:
            sparsebert.pipeline("feature-extraction", path, attention="bf16")
        assert UNAVAILABLE in str(info.value)
