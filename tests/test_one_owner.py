"""Every limit and schema has one owner, the C++ engine, and Python reads it: the thread cap, the config bounds and
choices, the weight names and outputs, the packed arrays' invariants; and tuning reaches the engine as options,
with the environment read once at load."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sparsebert import ModelFormatError, SparseEngine, _core
from sparsebert.convert.hf_config import check_hf_config
from sparsebert.errors import UnsupportedModelError
from sparsebert.format import read_model
from sparsebert.format.layouts import check_linear_arrays
from sparsebert.format.spec import encoder_spec, expected_tensors, validate_config
from sparsebert.tuning import Tuning


def test_thread_cap_is_an_argument_error_not_a_file_error(small_model):
    most = _core.MAX_THREADS
    with pytest.raises(ValueError, match=f"num_threads must be in \\[1, {most}\\]") as info:
        SparseEngine.load(small_model.path, num_threads=most + 1)
    assert not isinstance(info.value, ModelFormatError)
    assert SparseEngine.load(small_model.path, num_threads=2).num_threads == 2


def test_the_file_format_reads_the_engines_schema(small_model):
    config = read_model(small_model.path).config
    spec = _core.encoder_spec(config)
    arrays, linears = expected_tensors(config)
    assert arrays == spec["arrays"] and linears == spec["linears"]
    engine = SparseEngine.load(small_model.path, num_threads=1)
    assert engine.output_names == spec["outputs"]
    assert engine.max_sequence_length == spec["max_sequence_length"] == config["max_position_embeddings"]


@pytest.mark.parametrize("key", sorted(_core.CONFIG_LIMITS))
def test_config_bounds_come_from_the_engine(small_model, key):
    config = dict(read_model(small_model.path).config)
    least, most = _core.CONFIG_LIMITS[key]
    if key == "pad_token_id":
        config.update(position_ids="padding_offset")
    for bad in (least - 1, most + 1):
        config[key] = bad
        with pytest.raises(ModelFormatError, match=key):
            validate_config(config)


def test_config_choices_come_from_the_engine(small_model):
    config = dict(read_model(small_model.path).config)
    for key, allowed in _core.CONFIG_CHOICES.items():
        with pytest.raises(ModelFormatError, match=key):
            validate_config({**config, key: "no-such-" + key})
        for value in allowed:
            if key == "position_ids" and value == "padding_offset":
                continue  # needs pad_token_id as well
            if key == "head":
                continue  # a head changes which weights the file must hold, not whether the config is valid
            encoder_spec({**config, key: value})


def test_problems_are_listed_together(small_model):
    config = {**read_model(small_model.path).config, "hidden_act": "swish", "vocab_size": 0}
    with pytest.raises(ModelFormatError, match="hidden_act.*vocab_size|vocab_size.*hidden_act"):
        validate_config(config)


def test_exporter_refuses_what_the_engine_would(tmp_path):
    most = _core.CONFIG_LIMITS["hidden_size"][1]
    with pytest.raises(UnsupportedModelError, match=f"hidden_size must be an integer in \\[1, {most}\\]"):
        check_hf_config({"model_type": "bert", "hidden_size": most + 12, "num_attention_heads": 12}, "bert", "x")
    with pytest.raises(UnsupportedModelError, match="silu"):
        check_hf_config({"model_type": "bert", "hidden_act": "silu"}, "bert", "x")


def test_packed_array_invariants_are_the_constructors():
    arrays = {"row_ptr": np.array([0, 1, 2], np.int32), "col_idx": np.array([1, 7], np.uint16),
              "values": np.ones(2, np.float32)}
    with pytest.raises(ValueError, match="index 7 in row 1 is out of range") as checked:
        check_linear_arrays("unstructured", 2, 5, arrays)
    with pytest.raises(ValueError) as built:
        _core.PackedLinear.unstructured(2, 5, arrays["row_ptr"], arrays["col_idx"], arrays["values"])
    assert str(built.value) == str(checked.value)
    with pytest.raises(ValueError, match=str(_core.MAX_SPARSE_COLS)):
        check_linear_arrays("unstructured", 2, _core.MAX_SPARSE_COLS + 1, arrays)


# ---------------------------------------------------------------------------------------------------- tuning


def test_tuning_from_environment():
    assert Tuning.from_environment({}) == Tuning()
    env = {"SPARSEBERT_KBLOCK": "12", "SPARSEBERT_ROWGROUP": "0", "SPARSEBERT_FUSE_FFN": "0"}
    assert Tuning.from_environment(env) == Tuning(kblock_cols=12, group_panels=0, fuse_ffn=False)
    for variable, value in (("SPARSEBERT_KBLOCK", "0"), ("SPARSEBERT_KBLOCK", "x"), ("SPARSEBERT_ROWGROUP", "-2"),
                            ("SPARSEBERT_FUSE_FFN", "no")):
        with pytest.raises(ValueError, match=variable):
            Tuning.from_environment({variable: value})


def test_tuning_rejects_bad_values():
    with pytest.raises(ValueError, match="kblock_cols"):
        Tuning(kblock_cols=-1)
    with pytest.raises(ValueError, match="group_panels"):
        Tuning(group_panels=True)
    with pytest.raises(TypeError, match="fuse_ffn"):
        Tuning(fuse_ffn=0)


def test_environment_is_read_once_at_load_and_changes_no_result(small_model, monkeypatch):
    inputs = {"input_ids": np.arange(1, 41).reshape(2, 20) % 97}
    expected = SparseEngine.load(small_model.path, num_threads=2).run(inputs)
    monkeypatch.setenv("SPARSEBERT_KBLOCK", "8")
    monkeypatch.setenv("SPARSEBERT_FUSE_FFN", "0")
    tuned = SparseEngine.load(small_model.path, num_threads=2)
    monkeypatch.setenv("SPARSEBERT_KBLOCK", "nonsense")  # read at load only: the loaded engine never sees it
    out = tuned.run(inputs)
    for key in expected:  # other K-blocks only reorder fp32 sums of O(1) LayerNorm outputs: a few ulp
        np.testing.assert_allclose(out[key], expected[key], rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="SPARSEBERT_KBLOCK"):
        SparseEngine.load(small_model.path)
    with pytest.raises(TypeError, match="Tuning"):
        SparseEngine.load(small_model.path, tuning={"fuse_ffn": False})


def test_header_json_of_a_limit_breaking_file_is_refused(tmp_path, small_model):
    # A file written by another tool with a config the engine cannot run is a file defect.
    config = dict(read_model(small_model.path).config)
    config["num_hidden_layers"] = _core.CONFIG_LIMITS["num_hidden_layers"][1] + 1
    with pytest.raises(ModelFormatError, match="num_hidden_layers"):
        validate_config(json.loads(json.dumps(config)))


@pytest.mark.parametrize("num_threads", [_core.MAX_THREADS + 1, 2**31, 2**63])
def test_num_threads_is_refused_before_the_file_is_read(tmp_path, num_threads):
    missing = tmp_path / "not_there.sbert"  # a file error would mean the count was checked after reading
    with pytest.raises(ValueError, match="num_threads must be in") as info:
        SparseEngine.load(missing, num_threads=num_threads)
    assert not isinstance(info.value, ModelFormatError) and len(str(info.value)) < 200
