"""SparseEngine.run / SparseEngine.load on bad arguments: the right exception type and a message that names
the problem."""

from __future__ import annotations

import re

import numpy as np
import pytest

from sparsebert import ModelFormatError, SparseEngine

from conftest import FOREIGN_ISA

# small_model: vocab 97, max_position_embeddings 80, type_vocab_size 2.
VOCAB, MAX_POS, TYPE_VOCAB = 97, 80, 2


@pytest.fixture(scope="module")
def engine(small_model):
    assert (small_model.config.vocab_size, small_model.config.max_position_embeddings,
            small_model.config.type_vocab_size) == (VOCAB, MAX_POS, TYPE_VOCAB)
    return SparseEngine.load(small_model.path, num_threads=1)


def good_inputs(b=2, s=5):
    rng = np.random.default_rng(0)
    return {
        "input_ids": rng.integers(0, VOCAB, size=(b, s)).astype(np.int64),
        "attention_mask": np.ones((b, s), np.int64),
        "token_type_ids": np.zeros((b, s), np.int64),
    }


def with_(**changes):
    inputs = good_inputs()
    inputs.update(changes)
    return inputs


def check(engine, inputs, exc, *fragments):
    """run() raises exactly `exc` and its message matches every regex fragment (case-insensitive)."""
    with pytest.raises(exc) as info:
        engine.run(inputs)
    msg = str(info.value)
    for fragment in fragments:
        assert re.search(fragment, msg, flags=re.IGNORECASE), f"{fragment!r} not in message {msg!r}"
    return msg


def test_good_inputs_run(engine):
    # Baseline for everything below: the unmodified inputs are accepted.
    out = engine.run(good_inputs())
    assert out["last_hidden_state"].shape == (2, 5, 40)


# ------------------------------------------------------------------------------------------------------------
# dtype -> TypeError
# ------------------------------------------------------------------------------------------------------------

BAD_DTYPES = {
    "float32": lambda a: a.astype(np.float32),
    "float64": lambda a: a.astype(np.float64),
    "bool": lambda a: a.astype(bool),
    "object": lambda a: a.astype(object),
    "str": lambda a: a.astype(str),
    "complex": lambda a: a.astype(np.complex64),
}


@pytest.mark.parametrize("dtype", list(BAD_DTYPES))
@pytest.mark.parametrize("name", ["input_ids", "attention_mask", "token_type_ids"])
def test_wrong_dtype(engine, name, dtype):
    inputs = good_inputs()
    inputs[name] = BAD_DTYPES[dtype](inputs[name] % 2)
    check(engine, inputs, TypeError, name, r"int|dtype")


def test_wrong_dtype_in_list_form(engine):
    inputs = good_inputs()
    check(engine, [inputs["input_ids"].astype(np.float32)], TypeError, "input_ids")


# ------------------------------------------------------------------------------------------------------------
# shapes -> ValueError
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["input_ids", "attention_mask", "token_type_ids"])
@pytest.mark.parametrize("shape", [(5,), (2, 5, 1), (1, 2, 5), ()])
def test_wrong_rank(engine, name, shape):
    inputs = good_inputs()
    inputs[name] = np.zeros(shape, np.int64) if shape else np.int64(1)
    check(engine, inputs, ValueError, name, r"2-?d|dim|rank|\[batch, ?seq\]")


@pytest.mark.parametrize("name", ["attention_mask", "token_type_ids"])
@pytest.mark.parametrize("shape", [(2, 4), (2, 6), (1, 5), (3, 5), (5, 2)])
def test_mismatched_shapes(engine, name, shape):
    inputs = good_inputs()
    inputs[name] = np.zeros(shape, np.int64) + (1 if name == "attention_mask" else 0)
    check(engine, inputs, ValueError, name, r"shape|\(2, ?5\)")


@pytest.mark.parametrize("shape", [(0, 5), (2, 0), (0, 0)])
def test_empty_batch(engine, shape):
    inputs = {
        "input_ids": np.zeros(shape, np.int64),
        "attention_mask": np.ones(shape, np.int64),
        "token_type_ids": np.zeros(shape, np.int64),
    }
    check(engine, inputs, ValueError, r"empty|at least 1|zero|\b0\b")
    check(engine, {"input_ids": np.zeros(shape, np.int64)}, ValueError, r"empty|at least 1|zero|\b0\b")


def test_sequence_longer_than_max_positions(engine):
    inputs = good_inputs(b=1, s=MAX_POS + 1)
    check(engine, inputs, ValueError, r"max_position_embeddings|position|too long", str(MAX_POS))
    # exactly MAX_POS is fine
    engine.run(good_inputs(b=1, s=MAX_POS))


# ------------------------------------------------------------------------------------------------------------
# value ranges -> ValueError
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [-1, VOCAB, VOCAB + 1000, -(2**40), 2**40])
def test_input_ids_out_of_range(engine, bad):
    ids = good_inputs()["input_ids"]
    ids[1, 3] = bad
    msg = check(engine, with_(input_ids=ids), ValueError, "input_ids")
    assert str(bad) in msg or str(VOCAB) in msg, msg


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_input_ids_out_of_range_int32(engine, dtype):
    ids = good_inputs()["input_ids"].astype(dtype)
    ids[0, 0] = VOCAB
    check(engine, with_(input_ids=ids), ValueError, "input_ids", str(VOCAB))


@pytest.mark.parametrize("bad", [-1, TYPE_VOCAB, 7])
def test_token_types_out_of_range(engine, bad):
    tt = good_inputs()["token_type_ids"]
    tt[0, 2] = bad
    msg = check(engine, with_(token_type_ids=tt), ValueError, "token_type_ids")
    assert str(bad) in msg or str(TYPE_VOCAB) in msg, msg


@pytest.mark.parametrize("bad", [2, -1, 255])
def test_attention_mask_values(engine, bad):
    mask = good_inputs()["attention_mask"]
    mask[1, 4] = bad
    check(engine, with_(attention_mask=mask), ValueError, "attention_mask", r"0 and 1|0 or 1|0/1|binary|\{0, ?1\}")


def test_values_checked_before_narrowing(engine):
    # int64 values that would wrap into range when narrowed to int32 are still rejected.
    ids = good_inputs()["input_ids"]
    ids[0, 0] = 2**32 + 5
    check(engine, with_(input_ids=ids), ValueError, "input_ids")


# ------------------------------------------------------------------------------------------------------------
# names / container
# ------------------------------------------------------------------------------------------------------------


def test_unknown_input_name(engine):
    inputs = good_inputs()
    inputs["position_ids"] = np.zeros((2, 5), np.int64)
    check(engine, inputs, ValueError, "position_ids")
    inputs = good_inputs()
    inputs["input_idz"] = inputs.pop("input_ids")
    check(engine, inputs, ValueError, "input_idz")


def test_missing_input_ids(engine):
    inputs = good_inputs()
    del inputs["input_ids"]
    check(engine, inputs, ValueError, "input_ids")


@pytest.mark.parametrize("length", [0, 4, 6])
def test_wrong_list_length(engine, length):
    inputs = good_inputs()
    items = [inputs["input_ids"], inputs["attention_mask"], inputs["token_type_ids"]]
    items = (items * 2)[:length]
    check(engine, items, ValueError, str(length), r"input|expected")


def test_inputs_not_a_container(engine):
    with pytest.raises(TypeError):
        engine.run("input_ids")
    with pytest.raises(TypeError):
        engine.run(42)


def test_engine_still_works_after_errors(engine):
    expected = engine.run(good_inputs())
    for bad in (with_(attention_mask=np.full((2, 5), 2)), with_(input_ids=np.full((2, 5), -1))):
        with pytest.raises(ValueError):
            engine.run(bad)
    out = engine.run(good_inputs())
    for key in expected:
        np.testing.assert_array_equal(out[key], expected[key])


def _misaligned(array: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of `array` that starts one byte past an aligned address."""
    buf = np.zeros(array.nbytes + 1, np.uint8)
    view = np.frombuffer(buf.data, dtype=array.dtype, count=array.size, offset=1).reshape(array.shape)
    view[...] = array
    assert view.flags.c_contiguous and not view.flags.aligned
    return view


def test_misaligned_int32_inputs_reach_the_encoder_safely(engine):
    # Straight to the C++ encoder, past SparseEngine.run's own copy: the binding must not read int32 through a
    # misaligned pointer (undefined behaviour that UBSan reports in the sanitizer build, see .ci/sanitizers).
    inputs = {k: v.astype(np.int32) for k, v in good_inputs().items()}
    expected = engine._encoder.run(inputs["input_ids"], inputs["attention_mask"], inputs["token_type_ids"])
    out = engine._encoder.run(*(_misaligned(inputs[k]) for k in ("input_ids", "attention_mask", "token_type_ids")))
    for key in expected:
        np.testing.assert_array_equal(out[key], expected[key])
    public = engine.run({k: _misaligned(v) for k, v in inputs.items()})
    np.testing.assert_array_equal(public["last_hidden_state"], expected["last_hidden_state"])


def test_misaligned_float32_activations_reach_a_kernel_safely():
    from sparsebert import kernels

    rng = np.random.default_rng(1)
    weight = rng.standard_normal((24, 40)).astype(np.float32)
    weight[rng.random(weight.shape) < 0.8] = 0.0
    linear = kernels.pack(weight, rng.standard_normal(24).astype(np.float32))
    x = rng.standard_normal((40, 7)).astype(np.float32)
    np.testing.assert_array_equal(linear.matmul(_misaligned(x)), linear.matmul(x))


# ------------------------------------------------------------------------------------------------------------
# SparseEngine.load
# ------------------------------------------------------------------------------------------------------------


def test_load_missing_file(tmp_path):
    path = tmp_path / "does_not_exist.sbert"
    with pytest.raises((FileNotFoundError, ModelFormatError)) as info:
        SparseEngine.load(path)
    assert "does_not_exist.sbert" in str(info.value)
    assert "no such file" in str(info.value).lower() or isinstance(info.value, FileNotFoundError)


def test_load_directory(tmp_path):
    with pytest.raises((IsADirectoryError, ModelFormatError)) as info:
        SparseEngine.load(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_load_non_model_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"model_type": "bert", "hidden_size": 40}\n' * 4)
    with pytest.raises(ModelFormatError, match=r"(?i)magic|not a \.?sbert|sparsebert"):
        SparseEngine.load(path)


def test_load_checkpoint_dir_instead_of_file(tmp_path, minilm_dir):
    # A common mistake: passing the transformers checkpoint instead of the exported file.
    with pytest.raises(ModelFormatError):
        SparseEngine.load(minilm_dir)
    with pytest.raises(ModelFormatError, match=r"(?i)magic|not a \.?sbert"):
        SparseEngine.load(minilm_dir / "model.safetensors")


@pytest.mark.parametrize("isa", ["sse9", "AVX2", "", FOREIGN_ISA])
def test_load_bad_isa(small_model, isa):
    with pytest.raises(ValueError) as info:
        SparseEngine.load(small_model.path, isa=isa)
    assert repr(isa) in str(info.value) or (isa and isa in str(info.value))
    assert "scalar" in str(info.value)  # lists what is available


@pytest.mark.parametrize("num_threads, exc", [(0, ValueError), (-1, ValueError), (1.5, TypeError), ("2", TypeError)])
def test_load_bad_num_threads(small_model, num_threads, exc):
    with pytest.raises(exc, match="num_threads"):
        SparseEngine.load(small_model.path, num_threads=num_threads)


def test_load_bad_isa_from_environment(small_model, monkeypatch):
    monkeypatch.setenv("SPARSEBERT_ISA", "sse9")
    with pytest.raises(ValueError, match="sse9"):
        SparseEngine.load(small_model.path)
