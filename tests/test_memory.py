"""Bounded working memory: a call runs in chunks of at most max_batch_tokens tokens (whole sequences), so its
memory beyond the returned arrays does not grow with the batch; the scratch of a large call is freed when it ends;
int8 needs no more working memory per token than fp32; a model with fp16 embedding tables keeps them once, in
fp32. Measured in processes of their own (memory_worker.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import sparsebert
from sparsebert import SparseEngine, _core

from conftest import apply_plan_, make_model, random_inputs, run_worker

WORKER = Path(__file__).with_name("memory_worker.py")
MIB = 2**20
not_under_asan = pytest.mark.skipif(_core.SANITIZED, reason="RSS is the sanitizer's under ASan")


def minilm_shaped(tmp_path_factory, quantize=None, embeddings="fp32"):
    """A random model of all-MiniLM-L6-v2's shape (6 layers, hidden 384, FFN 1536, 512 positions), 90% 4-block."""
    model = make_model("base", seed=8, num_hidden_layers=6, hidden_size=384, num_attention_heads=12,
                       intermediate_size=1536, vocab_size=30522, max_position_embeddings=512)
    apply_plan_(model, "block4")
    path = tmp_path_factory.mktemp("memory") / f"minilm-{quantize or 'fp32'}-{embeddings}.sbert"
    sparsebert.export(model, path, verbose=False, quantize=quantize, embeddings=embeddings)
    return path


@pytest.fixture(scope="module")
def fp32_model(tmp_path_factory):
    return minilm_shaped(tmp_path_factory)


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory):
    return minilm_shaped(tmp_path_factory, "int8")


@not_under_asan
@pytest.mark.slow
def test_a_loaded_fp16_tables_model_keeps_one_fp32_copy_of_them(fp32_model, tmp_path_factory):
    fp16_model = minilm_shaped(tmp_path_factory, embeddings="fp16")
    fp32, fp16 = (run_worker(WORKER, "loading", path) for path in (fp32_model, fp16_model))
    # Once loaded, the engine holds the tables in fp32 as from an fp32 file: neither the file's float16 bytes nor
    # the widened arrays stay behind.
    assert abs(fp16["kept_bytes"] - fp32["kept_bytes"]) < 4 * MIB, (fp32, fp16)
    # While loading, the widened tables replace the mapped float32 ones: at most their float16 bytes more
    # ((30522 + 512 + 2) x 384 x 2 bytes), not a second widened copy.
    tables_fp16 = (30522 + 512 + 2) * 384 * 2
    assert fp16["peak_bytes"] < fp32["peak_bytes"] + tables_fp16 + 8 * MIB, (fp32, fp16)


@pytest.mark.parametrize("max_batch_tokens", [1, 64, 100, 4096])
def test_chunked_calls_give_the_unchunked_results(small_model, max_batch_tokens):
    whole = SparseEngine.load(small_model.path, num_threads=2, max_batch_tokens=_core.MAX_TOKENS)
    chunked = SparseEngine.load(small_model.path, num_threads=2, max_batch_tokens=max_batch_tokens)
    assert chunked.max_batch_tokens == max_batch_tokens
    inputs = random_inputs(97, [23, 5, 40, 1, 17, 40, 9], seed=2)
    expected = whole.run(inputs, output_hidden_states=True)
    out = chunked.run(inputs, output_hidden_states=True)
    assert out.keys() == expected.keys()
    for key in expected:  # tokens are independent of their batch-mates, lane for lane: bitwise the same
        np.testing.assert_array_equal(out[key], expected[key], err_msg=key)


@pytest.mark.parametrize("value, error", [(0, ValueError), (-5, ValueError), (2**40, ValueError), (1.5, TypeError),
                                          (True, TypeError)])
def test_max_batch_tokens_is_checked(small_model, value, error):
    with pytest.raises(error, match="max_batch_tokens"):
        SparseEngine.load(small_model.path, max_batch_tokens=value)


@not_under_asan
@pytest.mark.slow
@pytest.mark.parametrize("quantized", [False, True])
def test_working_memory_does_not_grow_with_the_batch_and_is_freed(fp32_model, int8_model, quantized):
    path = int8_model if quantized else fp32_model
    small = run_worker(WORKER, "working_set", path, 8, 512)  # one chunk of 4096 tokens
    large = run_worker(WORKER, "working_set", path, 64, 512)  # eight chunks
    # The same chunks: the working set of 8x the tokens stays that of one chunk (allocator slack aside).
    assert large["working_bytes"] < small["working_bytes"] + 16 * MIB, (small, large)
    assert large["kept_bytes"] < 16 * MIB, large  # the large call's scratch went back to the OS
    assert small["working_bytes"] < 64 * MIB, small  # ~10 KiB per token of a 4096-token chunk, and some slack


def per_token_working_bytes(path) -> float:
    """The working memory one more token of a chunk costs: two chunk sizes, the difference (constant buffers,
    such as a tiled FFN's group, cancel out)."""
    small = run_worker(WORKER, "working_set", path, 2, 512, 1024)
    large = run_worker(WORKER, "working_set", path, 8, 512, 4096)
    return (large["working_bytes"] - small["working_bytes"]) / (4096 - 1024)


@not_under_asan
@pytest.mark.slow
def test_int8_needs_no_more_working_memory_per_token_than_fp32(fp32_model, int8_model):
    fp32, int8 = per_token_working_bytes(fp32_model), per_token_working_bytes(int8_model)
    assert 0 < fp32 < 16 * 1024, fp32  # the activations of one token through a MiniLM-shaped layer: ~10 KiB
    assert int8 <= fp32 * 1.02, (fp32, int8)


@not_under_asan
@pytest.mark.slow
def test_a_huge_call_fits_under_an_address_space_limit(fp32_model):
    # 1024 x 512 tokens: the returned last_hidden_state alone is 805 MB.
    result = run_worker(WORKER, "under_address_limit", fp32_model, 3, 1024, 512, timeout=1800)
    assert result["shape"] == [1024, 512, 384] and result["finite"], result
