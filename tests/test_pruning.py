"""sparsebert.pruning: exact sparsity, block structure, magnitude order, and in-place BERT pruning."""

from __future__ import annotations

import numpy as np
import pytest

from sparsebert.pruning import magnitude_prune, prune_bert_

from conftest import encoder_linears, make_model

SPARSITIES = (0.0, 0.1, 0.5, 0.8, 0.9, 0.97, 1.0)


def _blocks(w, block=4):
    n, k = w.shape
    kb = -(-k // block)
    padded = np.zeros((n, kb * block), dtype=np.float64)
    padded[:, :k] = w
    return padded.reshape(n, kb, block)


def _block_valid(n, k, block=4):
    """[n, kb, block] mask of which lanes lie inside the matrix (the last block may be partial)."""
    kb = -(-k // block)
    lanes = np.arange(kb * block).reshape(kb, block) < k
    return np.broadcast_to(lanes, (n, kb, block))


@pytest.mark.parametrize("sparsity", SPARSITIES)
@pytest.mark.parametrize("shape", [(1, 1), (7, 10), (64, 64), (37, 129)])
def test_unstructured_exact_sparsity_and_magnitude(shape, sparsity):
    rng = np.random.default_rng(0)
    w = rng.standard_normal(shape).astype(np.float32)
    w[w == 0] = 1.0
    original = w.copy()
    p = magnitude_prune(w, sparsity, block=1)
    np.testing.assert_array_equal(w, original)  # input untouched
    assert p.shape == w.shape and p.dtype == w.dtype
    zero = p == 0
    assert int(zero.sum()) == round(sparsity * w.size)
    # Survivors keep their exact value; every pruned weight is no larger than every survivor.
    np.testing.assert_array_equal(p[~zero], w[~zero])
    if zero.any() and (~zero).any():
        assert np.abs(w[zero]).max() <= np.abs(w[~zero]).min()


@pytest.mark.parametrize("sparsity", SPARSITIES)
@pytest.mark.parametrize("shape", [(1, 4), (7, 10), (16, 64), (5, 3), (33, 74)])
def test_block4_exact_sparsity_and_structure(shape, sparsity):
    rng = np.random.default_rng(1)
    n, k = shape
    # Every full block has one magnitude for all its lanes (random signs), so any block norm ranks full
    # blocks the same way.
    kb = -(-k // 4)
    scales = rng.permutation(n * kb).reshape(n, kb, 1) + 1.0
    signs = rng.choice([-1.0, 1.0], size=(n, kb, 4))
    w = (scales * signs).reshape(n, kb * 4)[:, :k].astype(np.float32)
    p = magnitude_prune(w, sparsity, block=4)
    assert p.shape == w.shape and p.dtype == w.dtype
    pb, wb = _blocks(p), _blocks(w)
    valid = _block_valid(n, k)
    zero_block = ~(pb != 0).any(axis=2)
    assert int(zero_block.sum()) == round(sparsity * n * kb)
    # Blocks are kept or dropped whole.
    kept = ~zero_block
    np.testing.assert_array_equal(pb[kept], wb[kept])
    assert not pb[zero_block].any()
    # Among full blocks, the dropped ones are the weakest.
    full = valid.all(axis=2)
    s = scales[..., 0]
    if (zero_block & full).any() and (kept & full).any():
        assert s[zero_block & full].max() < s[kept & full].min()


def test_block4_blocks_are_aligned_to_input_columns():
    # A pattern whose strongest entries straddle a block boundary (columns 2..5): aligned 4-blocks
    # [0..3] and [4..7] must each be kept or dropped whole, never a sliding window.
    w = np.full((1, 8), 0.01, np.float32)
    w[0, 2:6] = 10.0
    p = magnitude_prune(w, 0.5, block=4)
    assert int((_blocks(p) != 0).any(axis=2).sum()) == 1
    nz = np.flatnonzero(p[0])
    assert list(nz) in ([0, 1, 2, 3], [4, 5, 6, 7])


def test_existing_zeros_count_towards_nothing_extra():
    # Already-zero weights are the smallest: pruning to 50% of a matrix that is 50% zeros changes nothing.
    rng = np.random.default_rng(2)
    w = rng.standard_normal((10, 20)).astype(np.float32)
    w[:, ::2] = 0.0
    np.testing.assert_array_equal(magnitude_prune(w, 0.5, block=1), w)


@pytest.mark.parametrize("bad", [-0.01, 1.01, float("nan")])
def test_bad_sparsity(bad):
    with pytest.raises(ValueError):
        magnitude_prune(np.ones((4, 4), np.float32), bad)


@pytest.mark.parametrize("block", [0, 2, 3, 8])
def test_bad_block(block):
    with pytest.raises(ValueError):
        magnitude_prune(np.ones((4, 8), np.float32), 0.5, block=block)


# ------------------------------------------------------------------------------------------------------------
# prune_bert_
# ------------------------------------------------------------------------------------------------------------


def _snapshot(model):
    return {k: v.detach().clone().numpy() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("kind", ["base", "sequence_classification", "question_answering"])
@pytest.mark.parametrize("sparsity, block", [(0.7, 1), (0.9, 4), (0.0, 1), (0.5, 4)])
def test_prune_bert_in_place(kind, sparsity, block):
    model = make_model(kind, seed=4, num_hidden_layers=2)
    before = _snapshot(model)
    pruned_ids = {id(lin.weight) for _, lins in encoder_linears(model) for lin in lins}
    pruned_names = {name for name, p in model.named_parameters() if id(p) in pruned_ids}
    assert len(pruned_names) == 6 * 2
    result = prune_bert_(model, sparsity, block)
    assert result is None or result is model
    after = _snapshot(model)

    for name in before:
        if name not in pruned_names:
            # Embeddings, LayerNorms, biases, pooler and heads are untouched.
            np.testing.assert_array_equal(after[name], before[name], err_msg=name)
            continue
        w, w0 = after[name], before[name]
        n, k = w.shape
        if block == 1:
            assert int((w == 0).sum()) == round(sparsity * w.size), name
            kept = w != 0
            np.testing.assert_array_equal(w[kept], w0[kept])
            if (~kept).any() and kept.any():
                assert np.abs(w0[~kept]).max() <= np.abs(w0[kept]).min()
        else:
            wb, wb0 = _blocks(w), _blocks(w0)
            zero_block = ~(wb != 0).any(axis=2)
            assert int(zero_block.sum()) == round(sparsity * n * -(-k // 4)), name
            # Blocks are kept (with their original values) or dropped whole.
            np.testing.assert_array_equal(wb[~zero_block], wb0[~zero_block])


def test_prune_bert_rejects_non_bert():
    import torch

    with pytest.raises((ValueError, TypeError)):
        prune_bert_(torch.nn.Linear(4, 4), 0.5, 1)
    model = make_model("base", num_hidden_layers=1)
    with pytest.raises(ValueError):
        prune_bert_(model, 1.5, 1)
    with pytest.raises(ValueError):
        prune_bert_(model, 0.5, 3)
