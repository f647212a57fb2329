"""ONNX import: encoder graphs written by torch.onnx.export for every family and head, with eager attention and with
transformers' default SDPA attention, packed and checked against ONNX Runtime on the same file; graphs that are not
such an encoder are refused by name."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import sparsebert  # noqa: E402
from sparsebert import SparseEngine  # noqa: E402
from sparsebert.errors import UnsupportedModelError  # noqa: E402
from sparsebert.format import read_model  # noqa: E402

from conftest import min_token_cosine_unpadded  # noqa: E402
from test_families import assert_family_matches, family_inputs, make_family_model, torch_reference  # noqa: E402


class KeywordCall(torch.nn.Module):
    """transformers 5 models take keywords only; the exported graph's scopes then start with /wrapped/."""

    def __init__(self, model):
        super().__init__()
        self.wrapped = model

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        kwargs = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        return self.wrapped(input_ids=input_ids, attention_mask=attention_mask, **kwargs).to_tuple()


def onnx_export(model, directory, with_types=True, opset=17):
    """The model as torch.onnx.export writes it (TorchScript exporter), with its config.json beside it."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "model.onnx"
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if with_types else [])
    example = tuple(torch.ones(2, 8, dtype=torch.int64) * (k + 2) if k == 0 else torch.ones(2, 8, dtype=torch.int64)
                    for k in range(len(names)))
    if with_types:
        example = (example[0], example[1], torch.zeros(2, 8, dtype=torch.int64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notices
        torch.onnx.export(KeywordCall(model), example, str(path), input_names=names, opset_version=opset, dynamo=False,
                          dynamic_axes={n: {0: "batch", 1: "seq"} for n in names})
    model.config.to_json_file(str(directory / "config.json"))
    return path


def op_types(path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


# transformers 5 loads models with SDPA attention unless told otherwise; its ONNX export guards each attention
# softmax against the NaN of a row with every key masked out: Where(IsNaN(p), 0, p).
ATTENTIONS = ["eager", "sdpa"]


@pytest.mark.slow
@pytest.mark.parametrize("head", ["Model", "ForSequenceClassification", "ForQuestionAnswering",
                                  "ForTokenClassification"])
@pytest.mark.parametrize("family", ["Bert", "Roberta", "DistilBert"])
@pytest.mark.parametrize("attention", ATTENTIONS)
def test_onnx_import_matches_torch_and_onnxruntime(attention, family, head, tmp_path):
    model = make_family_model(family, head, seed=len(family) * 3 + len(head), sparsity=0.85,
                              attn_implementation=attention)
    path = onnx_export(model, tmp_path / "onnx", with_types=family != "DistilBert")
    assert ("IsNaN" in op_types(path)) == (attention == "sdpa")
    out = tmp_path / "model.sbert"
    report = sparsebert.export(path, out, verbose=False)
    assert "checked against ONNX Runtime on the same file" in str(report)
    assert {row.layout for row in report.rows if row.name.startswith("layers.")} == {"unstructured"}
    inputs = family_inputs(family, [11, 5], seed=3)
    assert_family_matches(SparseEngine.load(out).run(inputs), torch_reference(model, inputs),
                          inputs["attention_mask"], f"onnx {family}{head}")


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_onnx_import_with_config_argument_and_opset_14(attention, tmp_path):
    # Opset 14 has no LayerNormalization: the exporter decomposes it, and the weights are still found. It is the
    # first opset torch exports SDPA attention to.
    model = make_family_model("Bert", "ForSequenceClassification", seed=4, attn_implementation=attention)
    path = onnx_export(model, tmp_path / "onnx", opset=14)
    config = json.loads((tmp_path / "onnx" / "config.json").read_text())
    (tmp_path / "onnx" / "config.json").unlink()
    with pytest.raises(UnsupportedModelError, match="no config.json"):
        sparsebert.export(path, tmp_path / "m.sbert", verbose=False)
    assert not (tmp_path / "m.sbert").exists()
    sparsebert.export(path, tmp_path / "m.sbert", verbose=False, config=config)
    inputs = family_inputs("Bert", [9, 4], seed=5)
    assert_family_matches(SparseEngine.load(tmp_path / "m.sbert").run(inputs), torch_reference(model, inputs),
                          inputs["attention_mask"], "opset 14")


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_unsupported_op_is_named(attention, tmp_path):
    model = make_family_model("Bert", "Model", seed=5, sparsity=0.0, attn_implementation=attention)
    path = onnx_export(model, tmp_path / "onnx")
    proto = onnx.load(str(path))
    last = proto.graph.output[0].name
    proto.graph.node.append(onnx.helper.make_node("Sin", [last], ["sin_out"], name="/odd/Sin"))
    onnx.save(proto, str(path))
    with pytest.raises(UnsupportedModelError, match=r"/odd/Sin \(Sin\)"):
        sparsebert.export(path, tmp_path / "m.sbert", verbose=False)


def _break_nan_guard(graph, how: str) -> str:
    """Makes the first attention softmax's NaN guard, Where(IsNaN(p), 0, p), something else (or adds an IsNaN
    elsewhere); the name of the IsNaN node the importer must then refuse."""
    isnan = next(n for n in graph.node if n.op_type == "IsNaN")
    where = next(n for n in graph.node if n.op_type == "Where" and n.input[0] == isnan.output[0])
    softmax = next(n for n in graph.node if n.output[0] == isnan.input[0])
    constant = {"one": np.ones(1, np.float32), "zero": np.zeros(1, np.float32)}
    graph.node.extend(onnx.helper.make_node("Constant", [], [k], value=onnx.numpy_helper.from_array(v))
                      for k, v in constant.items())
    if how == "fills ones":
        where.input[1] = "one"
    elif how == "tests the scores":  # IsNaN(scores) where the guard tests softmax(scores)
        isnan.input[0] = softmax.input[0]
    elif how == "passes the scores":  # Where(IsNaN(p), 0, scores)
        where.input[2] = softmax.input[0]
    elif how == "read elsewhere":
        graph.node.append(onnx.helper.make_node("Cast", [isnan.output[0]], ["nan_as_float"], to=1, name="/x/Cast"))
    else:  # "alone": a guard-shaped IsNaN on the encoder's output, after no softmax
        last = graph.output[0].name
        graph.node.append(onnx.helper.make_node("IsNaN", [last], ["odd_nan"], name="/odd/IsNaN"))
        graph.node.append(onnx.helper.make_node("Where", ["odd_nan", "zero", last], ["odd_out"], name="/odd/Where"))
        return "/odd/IsNaN"
    return isnan.name


@pytest.mark.parametrize("how", ["fills ones", "tests the scores", "passes the scores", "read elsewhere", "alone"])
def test_isnan_only_as_the_softmax_nan_guard(how, tmp_path):
    model = make_family_model("Bert", "Model", seed=5, sparsity=0.0, attn_implementation="sdpa")
    path = onnx_export(model, tmp_path / "onnx")
    proto = onnx.load(str(path))
    name = _break_nan_guard(proto.graph, how)
    onnx.save(proto, str(path))
    with pytest.raises(UnsupportedModelError) as refused:
        sparsebert.export(path, tmp_path / "m.sbert", verbose=False)
    # Only the broken one is named: the other layers' guards are the encoder's.
    named = re.findall(r"(\S+) \(IsNaN, accepted only as an attention softmax's NaN guard, Where\(IsNaN\(p\), 0, p\)\)",
                       str(refused.value))
    assert named == [name], str(refused.value)
    assert not (tmp_path / "m.sbert").exists()


def test_quantized_graph_is_refused(tmp_path):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = make_family_model("Bert", "Model", seed=6, sparsity=0.0)
    path = onnx_export(model, tmp_path / "onnx")
    quantized = tmp_path / "onnx" / "quantized.onnx"
    quantize_dynamic(str(path), str(quantized), weight_type=QuantType.QInt8)
    with pytest.raises(UnsupportedModelError, match="operator-oriented quantized graph.*MatMulInteger.*QDQ format"):
        sparsebert.export(quantized, tmp_path / "m.sbert", verbose=False)


def test_graph_that_computes_something_else_is_refused(tmp_path):
    # Weights found, but the graph does more than the encoder (here: doubles the output): the ONNX Runtime
    # check catches it and nothing is written.
    model = make_family_model("Bert", "Model", seed=7, sparsity=0.0)
    path = onnx_export(model, tmp_path / "onnx")
    proto = onnx.load(str(path))
    out = proto.graph.output[0]
    proto.graph.node.append(onnx.helper.make_node("Add", [out.name, out.name], ["doubled"], name="/double/Add"))
    doubled = onnx.helper.make_tensor_value_info("doubled", out.type.tensor_type.elem_type, None)
    proto.graph.output.remove(out)
    proto.graph.output.insert(0, doubled)
    onnx.save(proto, str(path))
    dest = tmp_path / "m.sbert"
    dest.write_bytes(b"keep me")
    with pytest.raises(UnsupportedModelError, match="differs from ONNX Runtime"):
        sparsebert.export(path, dest, verbose=False)
    assert dest.read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.sbert", "onnx"]


def test_not_an_onnx_file(tmp_path):
    path = tmp_path / "x.onnx"
    path.write_bytes(b"\x00garbage" * 10)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(UnsupportedModelError, match="cannot read"):
        sparsebert.export(path, tmp_path / "m.sbert", verbose=False)
    with pytest.raises(FileNotFoundError):
        sparsebert.export(tmp_path / "missing.onnx", tmp_path / "m.sbert", verbose=False)


def test_config_only_for_onnx(tmp_path, small_model):
    with pytest.raises(ValueError, match="only for ONNX"):
        sparsebert.export(small_model.model, tmp_path / "m.sbert", verbose=False, config={})


@pytest.mark.parametrize("family", ["Roberta", "DistilBert"])
@pytest.mark.parametrize("attention", ATTENTIONS)
def test_packed_weights_equal_the_onnx_initializers(attention, family, tmp_path):
    # Every weight, the attention's query / key / value included, is found by its node's scope.
    model = make_family_model(family, "ForSequenceClassification", seed=8, sparsity=0.0,
                              attn_implementation=attention)
    path = onnx_export(model, tmp_path / "onnx", with_types=family != "DistilBert")
    sparsebert.export(path, tmp_path / "a.sbert", verbose=False, compact=False)
    sparsebert.export(model, tmp_path / "b.sbert", verbose=False, compact=False)
    a, b = read_model(tmp_path / "a.sbert"), read_model(tmp_path / "b.sbert")
    assert set(a.tensors) == set(b.tensors)
    for name in a.tensors:
        np.testing.assert_array_equal(a.tensors[name], b.tensors[name], err_msg=name)


def test_graph_without_scopes_is_refused(tmp_path):
    model = make_family_model("Bert", "Model", seed=9, sparsity=0.0)
    path = onnx_export(model, tmp_path / "onnx")
    proto = onnx.load(str(path))
    for i, node in enumerate(proto.graph.node):
        node.name = f"node_{i}"
    # The dynamo exporter also writes ops the encoder graph does not have (GatherND, and Gelu from opset 20):
    # the missing scopes, what re-exporting fixes, are what the refusal names.
    proto.graph.node.append(onnx.helper.make_node("Gelu", [proto.graph.output[0].name], ["g"], name="node_gelu"))
    onnx.save(proto, str(path))
    with pytest.raises(UnsupportedModelError, match="dynamo=False"):
        sparsebert.export(path, tmp_path / "m.sbert", verbose=False)


def test_graphs_and_configs_that_cannot_be_read_are_one_line_errors(tmp_path, capsys):
    from sparsebert.cli import main

    model = make_family_model("Bert", "Model", seed=10, sparsity=0.0)
    path = onnx_export(model, tmp_path / "onnx")
    config = tmp_path / "onnx" / "config.json"
    original = config.read_text()
    source_bytes = path.read_bytes()

    def fails(fragment):
        with pytest.raises(UnsupportedModelError, match=re.escape(fragment)):
            sparsebert.export(path, tmp_path / "m.sbert", verbose=False)
        assert main(["export", str(path), str(tmp_path / "m.sbert")]) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and err.startswith("sparsebert export: error: ") and fragment in err, err

    # The destination is the graph itself, or its config: refused before anything is read or written.
    for destination in (path, config):
        with pytest.raises(ValueError, match="a file the export reads"):
            sparsebert.export(path, destination, verbose=False)
    assert path.read_bytes() == source_bytes and config.read_text() == original
    # A config.json that is a list, or nested too deeply for the json module.
    config.write_text("[1, 2]")
    fails("does not hold a JSON object")
    config.write_text("[" * 100_000 + "]" * 100_000)
    fails("nested too deeply")
    config.write_text(original)
    # A LayerNormalization whose scale the graph computes (here Max(scale, scale)) is no constant weight.
    proto = onnx.load(str(path))
    norm = next(n for n in proto.graph.node if n.op_type == "LayerNormalization")
    proto.graph.node.insert(0, onnx.helper.make_node("Max", [norm.input[1], norm.input[1]], ["computed_scale"],
                                                     name="computed_scale"))
    norm.input[1] = "computed_scale"
    onnx.save(proto, str(path))
    fails(f"{norm.name} (LayerNormalization): its scale is not a constant")
    assert not (tmp_path / "m.sbert").exists()


# Files written by Optimum's ONNX exporter (tools/make_optimum_fixtures.py made them; Optimum pins transformers 4,
# so it is not a test dependency): tiny 80%-pruned task models of each family.
OPTIMUM_FILES = {"bert": "sequence_classification", "roberta": "question_answering",
                 "distilbert": "token_classification"}


@pytest.mark.parametrize("family", list(OPTIMUM_FILES))
def test_optimum_files(family, tmp_path):
    from pathlib import Path

    source = Path(__file__).parent / "data" / "optimum" / family / "model.onnx"
    out = tmp_path / "m.sbert"
    report = sparsebert.export(source, out, verbose=False)
    assert "checked against ONNX Runtime on the same file" in str(report)
    config = read_model(out).config
    assert (config["model_type"], config["head"]) == (family, OPTIMUM_FILES[family])
    assert {row.layout for row in report.rows if row.name.startswith("layers.")} == {"unstructured"}
    # The packed model answers as ONNX Runtime does on inputs of other shapes too.
    session = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    inputs = family_inputs({"bert": "Bert", "roberta": "Roberta", "distilbert": "DistilBert"}[family], [30, 7],
                           vocab=97, seed=11)
    theirs = session.run(None, {i.name: inputs[i.name] for i in session.get_inputs()})
    ours = SparseEngine.load(out).run(inputs)
    keep = inputs["attention_mask"].astype(bool)
    expected = {"bert": ["logits"], "roberta": ["start_logits", "end_logits"], "distilbert": ["logits"]}[family]
    for key, value in zip(expected, theirs):
        mine, ref = (ours[key][keep], value[keep]) if ours[key].ndim >= 2 and ours[key].shape[1] == 30 else \
            (ours[key], value)
        np.testing.assert_allclose(mine, ref, atol=1e-4, err_msg=f"{family}/{key}")


def _int8_cosine_to_torch(path, model) -> float:
    """Least token cosine between the packed file's last hidden state and the float torch model's."""
    inputs = family_inputs("Bert", [12, 6], seed=4)
    ours = SparseEngine.load(path).run(inputs)["last_hidden_state"]
    theirs = torch_reference(model, inputs)["last_hidden_state"]
    return min_token_cosine_unpadded(ours, theirs, inputs["attention_mask"])


def test_onnx_source_exported_as_int8(tmp_path):
    """The ONNX Runtime check compares the graph with what it computes, the fp32 packing; the int8 file that is
    written runs its weights as int8 (calibrated against that fp32 twin)."""
    model = make_family_model("Bert", "ForSequenceClassification", seed=9, sparsity=0.9, block=4)
    path = onnx_export(model, tmp_path / "onnx")
    out = tmp_path / "q.sbert"
    report = sparsebert.export(path, out, verbose=False, quantize="int8")
    assert "checked against ONNX Runtime on the same file" in report.notes
    worst = float(report.notes.split("checked against ONNX Runtime on the same file: max |difference| ")[1].split()[0])
    assert worst <= 1e-4  # the fp32 twin, not the int8 file, is what the graph is compared with
    packed = sparsebert.format.read_model(out)
    assert {meta["layout"] for name, meta in packed.linears.items() if name.startswith("layers.")} == {"block4_int8"}
    assert packed.producer["calibration"]["min_token_cosine"] > 0.99
    assert _int8_cosine_to_torch(out, model) > 0.99
    assert sorted(p.name for p in tmp_path.iterdir()) == ["onnx", "q.sbert"]  # no staging or calibration files


def _qdq_graph(model, directory, per_channel):
    """The model's graph quantized statically by ONNX Runtime in the QDQ format: int8 weights (per tensor or per
    output channel) and u8 activations, each behind a DequantizeLinear."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Inputs(CalibrationDataReader):
        def __init__(self):
            self.batches = [family_inputs("Bert", [12, 7], seed=s) for s in range(3)]

        def get_next(self):
            return self.batches.pop() if self.batches else None

    path = onnx_export(model, directory)
    quantized = directory / f"qdq{int(per_channel)}.onnx"
    with warnings.catch_warnings():
        # SDPA's mask, Where(mask, 0, -inf), calibrates to an infinite range (scale inf: "invalid value
        # encountered in divide"); those activation pairs are not what sparsebert reads.
        warnings.filterwarnings("ignore", category=RuntimeWarning, module="onnxruntime.quantization")
        quantize_static(str(path), str(quantized), Inputs(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8)
    return quantized


@pytest.mark.slow
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("attention", ATTENTIONS)
def test_qdq_graph_keeps_its_int8_weights_and_scales(attention, per_channel, tmp_path):
    # With SDPA attention the softmax's output is quantized too: its NaN guard reads it through a QuantizeLinear ->
    # DequantizeLinear pair.
    from onnx import numpy_helper
    from sparsebert.bench.models import dense_weight

    model = make_family_model("Bert", "ForSequenceClassification", seed=11, sparsity=0.9, block=4,
                              attn_implementation=attention)
    path = _qdq_graph(model, tmp_path / "onnx", per_channel)
    graph = onnx.load(str(path)).graph
    initializers = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    dequantize = {n.output[0]: n for n in graph.node if n.op_type == "DequantizeLinear"}
    out = tmp_path / "q.sbert"
    report = sparsebert.export(path, out, verbose=False, quantize="int8", compact=False)
    assert "8 encoder linears keep its int8 weights and scales" in report.notes
    assert "activation QuantizeLinear / DequantizeLinear pairs removed" in report.notes  # the check passed
    packed = read_model(out)
    for node in graph.node:
        if node.op_type != "MatMul" or "/encoder/layer.0/intermediate/dense/" not in node.name:
            continue
        dq = dequantize[node.input[1]]
        integers = initializers[dq.input[0]].T.astype(np.float32)  # MatMul takes [K, N]
        scale = np.broadcast_to(initializers[dq.input[1]], integers.shape[:1]).astype(np.float32)
        arrays = dict(packed.linear_arrays("layers.0.ffn.up"))
        np.testing.assert_array_equal(arrays["scales"], scale)
        arrays["scales"] = np.ones_like(scale)
        np.testing.assert_array_equal(dense_weight("block4_int8", arrays, integers.shape), integers)
        break
    else:
        raise AssertionError("no FFN-up MatMul in the graph")
    # Against the float model the graph was quantized from (ONNX Runtime's own run of the QDQ graph clips
    # activations to ranges calibrated on three batches, so it is no reference for other inputs).
    assert _int8_cosine_to_torch(out, model) > 0.99
    # The float export of the same graph: its dequantized weights in fp32, checked against ONNX Runtime.
    report = sparsebert.export(path, tmp_path / "f.sbert", verbose=False)
    assert "exported in float" in report.notes and "pairs removed" in report.notes
