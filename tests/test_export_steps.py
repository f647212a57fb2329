"""Each step of the exporter (convert/exporter.py) on its own, on tiny random checkpoints: read_checkpoint,
map_names, compact_model, choose_layouts, pack, calibrate, write, and that together they make what export()
writes."""

from __future__ import annotations

import copy
import shutil
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import sparsebert  # noqa: E402
from sparsebert import SparseEngine, pipelines  # noqa: E402
from sparsebert.convert import calibration  # noqa: E402
from sparsebert.convert.exporter import (LayoutOptions, MappedModel, Packed, Source, choose_layouts,  # noqa: E402
                                         compact_model, map_names, pack, read_checkpoint, write)
from sparsebert.format import read_model, write_model  # noqa: E402
from sparsebert.format.spec import expected_tensors  # noqa: E402

from conftest import (ENCODER_LINEAR_SUFFIXES, apply_plan_, assert_close, assert_close_unpadded,  # noqa: E402
                      make_model, random_inputs, save_checkpoint, torch_forward)

HEADS = ("pooler", "classifier")


@pytest.fixture(scope="module")
def model():
    """3 layers pruned block4 / unstructured / not at all (conftest's "mixed" plan), with a classifier."""
    model = make_model("sequence_classification", seed=11, num_hidden_layers=3)
    model.expected = apply_plan_(model, "mixed")
    return model


@pytest.fixture(scope="module")
def mapped(model) -> MappedModel:
    return map_names(read_checkpoint(model))


def structured_model():
    """Layer 0: head 0 adds nothing (its output-projection columns are zero), FFN neurons 20..27 neither."""
    model = make_model("base", seed=12, num_hidden_layers=2)
    with torch.no_grad():
        layer = model.encoder.layer[0]
        layer.attention.output.dense.weight[:, :10] = 0  # head size 10: not a whole number of 4-blocks
        layer.output.dense.weight[:, 20:28] = 0  # two aligned groups of 4 neurons
    return model


# ------------------------------------------------------------------------------------------- read_checkpoint


def test_read_checkpoint_from_a_directory_with_its_tokenizer(model, tmp_path, minilm_dir):
    directory = save_checkpoint(model, tmp_path / "ckpt")
    shutil.copy(minilm_dir / "tokenizer.json", directory)
    source = read_checkpoint(directory)
    assert (source.checkpoint.family, source.checkpoint.head) == ("bert", "sequence_classification")
    assert source.checkpoint.source == str(directory)
    assert source.tokenizer_text == (minilm_dir / "tokenizer.json").read_text(encoding="utf-8")
    assert source.onnx_path is None and not source.sentence_keys and source.sentence_note is None


def test_read_checkpoint_from_a_model_object(model, minilm_dir):
    source = read_checkpoint(model)
    assert source.checkpoint.architecture == "BertForSequenceClassification"
    assert source.tokenizer_text is None  # a model object carries none ...
    assert "[CLS]" in read_checkpoint(model, tokenizer=minilm_dir).tokenizer_text  # ... unless one is given
    with pytest.raises(ValueError, match="only for ONNX"):
        read_checkpoint(model, config={})


def test_read_checkpoint_refuses_a_missing_onnx_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such ONNX file"):
        read_checkpoint(tmp_path / "missing.onnx")


# ----------------------------------------------------------------------------------------------- map_names


def test_map_names_gives_the_canonical_tensors(model, mapped):
    config = mapped.config
    assert (config["head"], config["num_hidden_layers"], config["has_pooler"]) == ("sequence_classification", 3, True)
    arrays, linears = expected_tensors(config)
    assert set(mapped.items) == set(arrays) | set(linears)
    for name, shape in arrays.items():
        assert mapped.items[name].shape == shape, name
    for name, shape in linears.items():
        weight, bias = mapped.items[name]
        assert (weight.shape, bias.shape) == (shape, (shape[0],)), name
    layer = model.bert.encoder.layer[1]
    qkv = torch.cat([getattr(layer.attention.self, n).weight for n in ("query", "key", "value")]).detach().numpy()
    np.testing.assert_array_equal(mapped.items["layers.1.attention.qkv"][0], qkv)
    np.testing.assert_array_equal(mapped.items["classifier"][0], model.classifier.weight.detach().numpy())
    assert mapped.row_scales == {}  # a float checkpoint has no int8 grid


def test_map_names_keeps_a_quantized_checkpoints_row_scales(model):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated, still shipped
        quantized = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear},
                                                           dtype=torch.qint8)
        mapped = map_names(read_checkpoint(quantized))
    expected = {f"layers.{i}.{suffix}" for i in range(3) for suffix in ENCODER_LINEAR_SUFFIXES}
    assert set(mapped.row_scales) == expected
    for name, scales in mapped.row_scales.items():
        assert scales.shape == (mapped.items[name][0].shape[0],) and np.isfinite(scales).all(), name


# ------------------------------------------------------------------------------------------ choose_layouts


def test_choose_layouts_auto_follows_sparsity_and_block_fill(model, mapped):
    layouts = choose_layouts(mapped.items, LayoutOptions())
    assert set(layouts) == set(expected_tensors(mapped.config)[1])  # linears only
    for i, layout in model.expected.items():
        assert {layouts[f"layers.{i}.{s}"] for s in ENCODER_LINEAR_SUFFIXES} == {layout}
    assert {layouts[h] for h in HEADS} == {"dense"}  # not pruned
    assert set(choose_layouts(mapped.items, LayoutOptions(dense_below=1.0)).values()) == {"dense"}


@pytest.mark.parametrize("forced", ["dense", "unstructured", "block4", "block4_int8"])
def test_choose_layouts_forced(mapped, forced):
    assert set(choose_layouts(mapped.items, LayoutOptions(layout=forced)).values()) == {forced}


def test_choose_layouts_int8_is_for_the_encoder_layers(model, mapped):
    options = LayoutOptions(quantize="int8")
    layouts = choose_layouts(mapped.items, options)
    assert {layouts[n] for n in layouts if n.startswith("layers.")} == {"block4_int8"}
    assert {layouts[h] for h in HEADS} == {"dense"}  # the pooler and heads stay fp32, chosen as without int8
    assert choose_layouts(mapped.items, options.float_twin()) == choose_layouts(mapped.items, LayoutOptions())
    forced = choose_layouts(mapped.items, LayoutOptions(layout="unstructured", quantize="int8"))
    assert forced["layers.0.ffn.up"] == "block4_int8" and forced["pooler"] == "unstructured"


# ------------------------------------------------------------------------------------------- compact_model


@pytest.mark.parametrize("layout, heads_kept", [("dense", [3, 4]), ("block4", [4, 4])])
def test_compact_model_keeps_4_blocks_whole(layout, heads_kept):
    mapped = map_names(read_checkpoint(structured_model()))
    kept = compact_model(mapped, LayoutOptions(layout=layout))
    # Head 0 goes unless its output projection packs as 4-blocks, which a 10-wide head would split.
    assert [layer.heads_kept for layer in kept] == heads_kept
    assert [layer.neurons_kept for layer in kept] == [74 - 8, 74]  # whole aligned groups of 4: any layout
    assert mapped.config["layer_intermediate"] == [66, 74]
    assert mapped.items["layers.0.attention.output"][0].shape == (40, heads_kept[0] * 10)
    assert mapped.items["layers.0.ffn.down"][0].shape == (40, 66)


# ---------------------------------------------------------------------------------------------------- pack


def test_pack_gives_arrays_the_format_accepts(model, mapped, tmp_path):
    layouts = choose_layouts(mapped.items, LayoutOptions())
    packed = pack(mapped.items, layouts)
    assert [row.name for row in packed.rows] == list(layouts) and [row.layout for row in packed.rows] == \
        list(layouts.values())
    for row in packed.rows:
        stored = [a for n, a in packed.tensors.items() if n.startswith(row.name + ".")]
        assert row.bytes == sum(a.nbytes for a in stored), row.name
    path = tmp_path / "packed.sbert"
    write_model(path, mapped.config, packed.linears, packed.tensors, {"name": "test_export_steps"})
    assert read_model(path).linears == packed.linears  # every check of the reader passed
    inputs = random_inputs(model.config.vocab_size, [9, 4], seed=2)
    ours, theirs = SparseEngine.load(path).run(inputs), torch_forward(model, inputs)
    assert_close_unpadded(ours["last_hidden_state"], theirs["last_hidden_state"], inputs["attention_mask"])
    assert_close(ours["logits"], theirs["logits"])


def test_pack_int8_keeps_given_row_scales(mapped):
    layouts = choose_layouts(mapped.items, LayoutOptions(quantize="int8"))
    name = "layers.2.ffn.up"  # layer 2 is not pruned: every row has a nonzero
    weight = mapped.items[name][0].copy()
    scale = np.float32(np.abs(weight[0]).max() / 100)
    weight[0] = np.round(weight[0] / scale) * scale  # row 0 on a grid of the checkpoint's own
    scales = np.full(weight.shape[0], np.nan, np.float32)  # NaN: the exporter chooses the row's scale
    scales[0] = scale
    items = {**mapped.items, name: (weight, mapped.items[name][1])}
    packed = pack(items, layouts, {name: scales})
    stored = packed.tensors[f"{name}.scales"]
    assert stored[0] == scales[0] and np.all(stored[1:] != scales[0])
    rows = {row.name: row for row in packed.rows}
    assert rows[name].layout == "block4_int8" and 0 < rows[name].weight_error < 0.01
    assert rows["pooler"].weight_error is None


# ----------------------------------------------------------------------------------------------- calibrate


@pytest.fixture(scope="module")
def int8_parts(minilm_dir):
    """An int8 packing and its fp32 twin of a model over MiniLM's vocabulary, with MiniLM's tokenizer."""
    model = make_model("base", seed=13, vocab_size=30522, max_position_embeddings=64)
    source = read_checkpoint(model, tokenizer=minilm_dir)
    mapped = map_names(source)
    options = LayoutOptions(quantize="int8")
    int8 = pack(mapped.items, choose_layouts(mapped.items, options))
    twin = pack(mapped.items, choose_layouts(mapped.items, options.float_twin()))
    return source, mapped, int8, twin


def test_calibrate_on_a_text_file_through_the_public_pipeline(int8_parts, tmp_path, monkeypatch):
    source, mapped, int8, twin = int8_parts
    texts = tmp_path / "calibration.txt"
    texts.write_text("The quick brown fox.\n\nSparse models run fast on CPUs.\n" * 5 + "a\n", encoding="utf-8")
    tokenized = []
    real = pipelines.Pipeline.tokenize

    def counting(self, batch, max_length=None):
        tokenized.append((len(batch), max_length))
        return real(self, batch, max_length)

    monkeypatch.setattr(pipelines.Pipeline, "tokenize", counting)
    out = tmp_path / "m.sbert"
    result = calibration.calibrate(out, mapped.config, (int8.linears, int8.tensors), (twin.linears, twin.tensors),
                                   source.tokenizer_text, texts)
    assert result["inputs"] == "11 texts from calibration.txt"
    assert tokenized == [(8, 64), (3, 64)]  # the pipeline's own tokenization, the model's longest sequence
    assert result["min_token_cosine"] > 0.99 and len(result["layers"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calibration.txt"]  # the twin files are gone
    with pytest.raises(ValueError, match="need the model's tokenizer"):
        calibration.calibrate(out, mapped.config, (int8.linears, int8.tensors), (twin.linears, twin.tensors), None,
                              texts)


# --------------------------------------------------------------------------------------------------- write


def test_write_a_checkpoint_source(int8_parts, tmp_path):
    source, mapped, int8, _ = int8_parts
    out = tmp_path / "m.sbert"
    assert write(out, mapped, int8, {"name": "test_export_steps"}, source) is None  # nothing to check against
    written = read_model(out)
    assert written.producer == {"name": "test_export_steps"} and written.linears == int8.linears
    assert written.header["tokenizer"] == source.tokenizer_text


# -------------------------------------------------------------------------------------------- all together


def test_the_steps_make_what_export_writes(model, tmp_path):
    directory = save_checkpoint(model, tmp_path / "ckpt")
    report = sparsebert.export(directory, tmp_path / "exported.sbert", verbose=False, layout="auto")
    source = read_checkpoint(directory)
    mapped = map_names(source)
    options = LayoutOptions()
    compact_model(mapped, options)
    packed = pack(mapped.items, choose_layouts(mapped.items, options), mapped.row_scales)
    assert isinstance(source, Source) and isinstance(packed, Packed)
    exported = read_model(tmp_path / "exported.sbert")
    assert exported.config == mapped.config and exported.linears == packed.linears
    assert set(exported.tensors) == set(packed.tensors)
    for name, array in packed.tensors.items():
        np.testing.assert_array_equal(exported.tensors[name], array, err_msg=name)
    assert [row.name for row in report.rows] == [row.name for row in packed.rows]
