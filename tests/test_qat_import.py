"""Already-quantized checkpoints (convert/qat.py): torch's dynamic / converted quantized linears and QAT
fake-quantized models keep their int8 weights and scales through int8 export, bit for bit; the float export of
such a model computes with the same dequantized weights as torch; what cannot be read is refused clearly."""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import sparsebert  # noqa: E402
from sparsebert import SparseEngine, UnsupportedModelError  # noqa: E402
from sparsebert.bench.models import dense_weight  # noqa: E402
from sparsebert.format import read_model  # noqa: E402
from sparsebert.convert.quantization import quantize_weight_int8  # noqa: E402

from conftest import (  # noqa: E402
    apply_plan_, assert_close, make_model, min_token_cosine_unpadded, random_inputs, torch_forward)

QKV = ("query", "key", "value")

# torch.ao.quantization and its quantized tensors are deprecated but still shipped; their warnings are noise here.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")


def _layer_linears(model, i):
    """The torch modules behind the file's layers.{i}.* linears (Q, K, V stacked like the exporter does)."""
    layer = model.bert.encoder.layer[i]
    return {
        "attention.qkv": [getattr(layer.attention.self, n) for n in QKV],
        "attention.output": [layer.attention.output.dense],
        "ffn.up": [layer.intermediate.dense],
        "ffn.down": [layer.output.dense],
    }


def _stored(packed, name, dequantized=False):
    """(integer or dequantized dense weight [N, K], scales [N]) of an int8 linear in a packed file."""
    meta, arrays = packed.linears[name], dict(packed.linear_arrays(name))
    scales = np.asarray(arrays["scales"])
    if not dequantized:
        arrays["scales"] = np.ones_like(scales)
    return dense_weight("block4_int8", arrays, tuple(meta["shape"])), scales


def _dequantized_float_twin(model, quantized):
    """``model`` with each Linear's weight replaced by what ``quantized`` (same structure) computes with."""
    twin = copy.deepcopy(model)
    quantized_modules = dict(quantized.named_modules())
    with torch.no_grad():
        for name, module in twin.named_modules():
            if isinstance(module, torch.nn.Linear):
                source = quantized_modules[name]
                weight = source.weight()
                module.weight.copy_(weight.dequantize() if weight.is_quantized else weight)
    return twin


@pytest.fixture(scope="module")
def pruned_model():
    model = make_model("sequence_classification", seed=3, num_hidden_layers=2)
    apply_plan_(model, "block4")
    return model


@pytest.mark.parametrize("per_channel", [False, True])
def test_dynamic_quantized_model_keeps_its_int8_weights_and_scales(pruned_model, tmp_path, per_channel):
    qconfig = (torch.ao.quantization.per_channel_dynamic_qconfig if per_channel
               else torch.ao.quantization.default_dynamic_qconfig)
    quantized = torch.ao.quantization.quantize_dynamic(copy.deepcopy(pruned_model), {torch.nn.Linear: qconfig},
                                                       dtype=torch.qint8)
    path = tmp_path / "q.sbert"
    report = sparsebert.export(quantized, path, verbose=False, quantize="int8", compact=False)
    assert "8 encoder linears keep its int8 weights and scales" in report.notes
    packed = read_model(path)
    hit_most_negative = False
    for i in range(2):
        for name, modules in _layer_linears(quantized, i).items():
            integers, scales = _stored(packed, f"layers.{i}.{name}")
            weights = [m.weight() for m in modules]
            expected = np.concatenate([w.int_repr().numpy().astype(np.float32) for w in weights])
            if per_channel:
                expected_scales = np.concatenate([w.q_per_channel_scales().numpy() for w in weights])
            else:
                expected_scales = np.concatenate([np.full(w.shape[0], w.q_scale()) for w in weights])
            np.testing.assert_array_equal(integers, expected)
            np.testing.assert_array_equal(scales, expected_scales.astype(np.float32))
            assert packed.linears[f"layers.{i}.{name}"]["weight_error"] == 0.0
            hit_most_negative |= bool((expected == -128).any())
    # The pooler and classifier stay fp32, holding the dequantized weights torch computes with.
    pooler = packed.linear_arrays("pooler")["weight"]
    np.testing.assert_array_equal(pooler, quantized.bert.pooler.dense.weight().dequantize().numpy())
    assert hit_most_negative  # torch's qint8 grid reaches -128, which is kept, not clipped
    # The engine runs the int8 grid: close to a float model with the same dequantized weights (activations are
    # quantized per token, so not exactly).
    inputs = random_inputs(pruned_model.config.vocab_size, [11, 6])
    twin = _dequantized_float_twin(pruned_model, quantized)
    ours = SparseEngine.load(path).run(inputs)["last_hidden_state"]
    theirs = torch_forward(twin, inputs)["last_hidden_state"]
    assert min_token_cosine_unpadded(ours, theirs, inputs["attention_mask"]) > 0.999


def test_float_export_of_a_quantized_model_computes_with_its_dequantized_weights(pruned_model, tmp_path, capsys):
    quantized = torch.ao.quantization.quantize_dynamic(
        copy.deepcopy(pruned_model), {torch.nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig},
        dtype=torch.qint8)
    path = tmp_path / "f.sbert"
    report = sparsebert.export(quantized, path, verbose=False)
    assert "exported in float" in report.notes and "quantize='int8'" in report.notes
    assert not any(r.layout == "block4_int8" for r in report.rows)
    from sparsebert.cli import main

    assert main(["info", str(path)]) == 0
    assert "quantized checkpoint: 14 linears exported in float" in capsys.readouterr().out
    inputs = random_inputs(pruned_model.config.vocab_size, [9, 4])
    out = SparseEngine.load(path).run(inputs)
    expected = torch_forward(_dequantized_float_twin(pruned_model, quantized), inputs)
    assert_close(out["logits"], expected["logits"], what="logits")


def test_compaction_drops_the_scales_of_removed_rows(tmp_path):
    model = make_model("sequence_classification", seed=6, num_hidden_layers=1)  # dense: nothing else removable
    with torch.no_grad():
        model.bert.encoder.layer[0].intermediate.dense.weight[4:8] = 0  # one aligned quad of neurons: bias only
    quantized = torch.ao.quantization.quantize_dynamic(
        model, {torch.nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig}, dtype=torch.qint8)
    path = tmp_path / "c.sbert"
    sparsebert.export(quantized, path, verbose=False, quantize="int8")
    packed = read_model(path)
    kept = packed.config["layer_intermediate"][0]
    up = quantized.bert.encoder.layer[0].intermediate.dense.weight()
    keep = np.ones(up.shape[0], bool)
    keep[4:8] = False
    assert kept == up.shape[0] - 4
    integers, scales = _stored(packed, "layers.0.ffn.up")
    np.testing.assert_array_equal(scales, up.q_per_channel_scales().numpy().astype(np.float32)[keep])
    np.testing.assert_array_equal(integers, up.int_repr().numpy()[keep].astype(np.float32))


def _prepared_qat(model, inputs, qconfig="x86"):
    qat = copy.deepcopy(model).train()
    qconfig = torch.ao.quantization.get_default_qat_qconfig(qconfig)
    for module in qat.modules():
        if isinstance(module, torch.nn.Linear):
            module.qconfig = qconfig
    torch.ao.quantization.prepare_qat(qat, inplace=True)
    with torch.no_grad():
        qat(**{k: torch.from_numpy(v) for k, v in inputs.items()})  # the observers set the scales
    qat.apply(torch.ao.quantization.disable_observer)
    return qat.eval()


def test_qat_fake_quantized_model_and_its_saved_checkpoint(pruned_model, tmp_path):
    inputs = random_inputs(pruned_model.config.vocab_size, [12, 7])
    qat = _prepared_qat(pruned_model, inputs)
    from_object = tmp_path / "object.sbert"
    report = sparsebert.export(qat, from_object, verbose=False, quantize="int8", compact=False)
    directory = tmp_path / "qat-checkpoint"
    qat.save_pretrained(directory, safe_serialization=True)  # keeps the fake-quantizers' scales and zero points
    from_directory = tmp_path / "directory.sbert"
    sparsebert.export(directory, from_directory, verbose=False, quantize="int8", compact=False)
    a, b = read_model(from_object), read_model(from_directory)
    assert a.tensors.keys() == b.tensors.keys()
    for key in a.tensors:
        np.testing.assert_array_equal(a.tensors[key], b.tensors[key], err_msg=key)

    regridded = 0
    for i in range(2):
        for name, modules in _layer_linears(qat, i).items():
            # What the QAT network computes with, from torch's own fake quantizer.
            computed = np.concatenate([m.weight_fake_quant(m.weight).detach().numpy() for m in modules])
            fq_scales = np.concatenate([m.weight_fake_quant.scale.numpy() for m in modules])
            dequantized, scales = _stored(a, f"layers.{i}.{name}", dequantized=True)
            on_grid = scales == fq_scales
            regridded += int((~on_grid).sum())
            np.testing.assert_array_equal(dequantized[on_grid], computed[on_grid])
            # Rows torch's fused observer quantized over [0, 255] (no negative weight) get a symmetric grid of
            # their own, one int8 step from what torch computes with.
            step = scales[~on_grid, None] / 2
            assert (np.abs(dequantized[~on_grid] - computed[~on_grid]) <= step * (1 + 1e-6)).all()
    assert regridded > 0  # the pruned random rows include some without negative weights
    assert f"{regridded} of" in report.notes and "symmetric grid of sparsebert's" in report.notes
    assert a.producer["quantized_checkpoint"] == {"linears": 8, "int8": True, "rows": 2 * (120 + 40 + 74 + 40),
                                                  "rows_regridded": regridded}

    out = SparseEngine.load(from_object).run(inputs)["logits"]
    with torch.no_grad():
        reference = qat(**{k: torch.from_numpy(v) for k, v in inputs.items()}).logits.numpy()
    # The QAT model also fake-quantizes activations (per tensor, static); the engine quantizes them per token.
    assert np.abs(out - reference).max() < 0.05 * np.abs(reference).max()


def test_qat_checkpoint_rows_all_on_grid_keep_exactly(tmp_path):
    """Per-channel symmetric fake quantization with the plain (unfused) observer: every row on a symmetric grid,
    -128 included, so the whole weight is kept exactly."""
    model = make_model("base", seed=8, num_hidden_layers=1)
    qconfig = torch.ao.quantization.QConfig(
        activation=torch.ao.quantization.default_fake_quant,
        weight=torch.ao.quantization.default_per_channel_weight_fake_quant)
    qat = copy.deepcopy(model).train()
    for module in qat.modules():
        if isinstance(module, torch.nn.Linear):
            module.qconfig = qconfig
    torch.ao.quantization.prepare_qat(qat, inplace=True)
    inputs = random_inputs(model.config.vocab_size, [5])
    with torch.no_grad():
        qat(**{k: torch.from_numpy(v) for k, v in inputs.items()})
    path = tmp_path / "q.sbert"
    sparsebert.export(qat.eval(), path, verbose=False, quantize="int8", compact=False)
    packed = read_model(path)
    up = qat.encoder.layer[0].intermediate.dense
    integers, scales = _stored(packed, "layers.0.ffn.up")
    np.testing.assert_array_equal(scales, up.weight_fake_quant.scale.numpy())
    computed = up.weight_fake_quant(up.weight).detach().numpy()
    np.testing.assert_array_equal(integers * scales[:, None], computed)
    assert (integers == -128).any() and integers.max() <= 127


def test_qat_checkpoint_that_cannot_be_read_is_refused_clearly(pruned_model, tmp_path):
    from safetensors.numpy import load_file, save_file

    inputs = random_inputs(pruned_model.config.vocab_size, [6])
    directory = tmp_path / "ckpt"
    _prepared_qat(pruned_model, inputs).save_pretrained(directory, safe_serialization=True)
    state = load_file(directory / "model.safetensors")
    key = "bert.encoder.layer.0.intermediate.dense.weight_fake_quant"
    rows = pruned_model.config.intermediate_size
    cases = {
        "no zero point": ({key + ".zero_point": None}, "scale but no zero_point"),
        "zero point out of range": ({key + ".zero_point": np.full(rows, 300, np.int32)},
                                    "outside the quantizer's range"),
        "scale of wrong shape": ({key + ".scale": np.ones(5, np.float32)}, "shape \\[5\\]"),
        "zero scale": ({key + ".scale": np.zeros(rows, np.float32)}, "finite and > 0"),
    }
    for case, (changes, message) in cases.items():
        changed = dict(state)
        for name, value in changes.items():
            if value is None:
                del changed[name]
            else:
                changed[name] = value
        save_file(changed, str(directory / "model.safetensors"))
        with pytest.raises(UnsupportedModelError, match=message):
            sparsebert.export(directory, tmp_path / "x.sbert", verbose=False, quantize="int8")
    assert not list(tmp_path.glob("*.sbert"))


def test_quantize_weight_int8_keeps_given_scales():
    rng = np.random.default_rng(0)
    integers = rng.integers(-128, 128, size=(3, 8)).astype(np.float32)
    integers[0, 0] = -128
    scales = np.array([0.01, np.nan, 0.5], np.float32)
    weight = (integers * np.nan_to_num(scales, nan=0.02)[:, None]).astype(np.float32)
    q = quantize_weight_int8(weight, scales)
    stored = dense_weight("block4_int8", {**q, "scales": np.ones(3, np.float32)}, (3, 8))
    np.testing.assert_array_equal(stored[[0, 2]], integers[[0, 2]])  # -128 kept
    assert q["scales"][0] == scales[0] and q["scales"][2] == scales[2]
    assert q["scales"][1] == np.float32(np.abs(weight[1]).max() / 127)  # NaN: chosen here, symmetric
    assert np.abs(stored[1]).max() == 127
    off_grid = weight.copy()
    off_grid[2, 3] += 0.2
    with pytest.raises(ValueError, match="int8 grid"):
        quantize_weight_int8(off_grid, scales)
    with pytest.raises(ValueError, match="one value per row"):
        quantize_weight_int8(weight, scales[:2])


def test_distilbert_quantized_linears_map_to_their_layers(tmp_path):
    """DistilBERT names its linears q_lin / k_lin / v_lin / out_lin / lin1 / lin2 (convert/hf_names.py)."""
    from test_families import make_family_model

    model = make_family_model("DistilBert", "Model", seed=2, sparsity=0.9, block=4)
    quantized = torch.ao.quantization.quantize_dynamic(
        copy.deepcopy(model), {torch.nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig}, dtype=torch.qint8)
    path = tmp_path / "d.sbert"
    sparsebert.export(quantized, path, verbose=False, quantize="int8", compact=False)
    packed = read_model(path)
    layer = quantized.transformer.layer[0]
    expected = {"attention.qkv": [layer.attention.q_lin, layer.attention.k_lin, layer.attention.v_lin],
                "attention.output": [layer.attention.out_lin], "ffn.up": [layer.ffn.lin1],
                "ffn.down": [layer.ffn.lin2]}
    for name, modules in expected.items():
        integers, scales = _stored(packed, f"layers.0.{name}")
        np.testing.assert_array_equal(
            integers, np.concatenate([m.weight().int_repr().numpy() for m in modules]).astype(np.float32))
        np.testing.assert_array_equal(
            scales, np.concatenate([m.weight().q_per_channel_scales().numpy() for m in modules]).astype(np.float32))
