"""The benchmark harness (sparsebert.bench): the peers must run exactly sparsebert's model, the ONNX file must
compute what PyTorch computes, the FLOP counts and statistics must be right, and the reports must say so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import sparsebert
from sparsebert.bench import flops, report, sweep_report, timing
from sparsebert.bench.models import dense_weight, to_transformers
from sparsebert.format import read_model
from sparsebert.convert.packing import pack_arrays

from conftest import apply_plan_, assert_close, assert_close_unpadded, make_model, random_inputs, torch_forward

# Kinds of model the harness must rebuild: every head, and a BertModel built without its pooler.
REBUILD_KINDS = ("base", "base_no_pooler", "sequence_classification", "question_answering")


def _model(kind: str, seed: int = 7):
    # Three layers, so the "mixed" plan gives one block4, one unstructured and one dense layer.
    model = make_model("base" if kind == "base_no_pooler" else kind, seed=seed, num_hidden_layers=3)
    if kind == "base_no_pooler":
        model.pooler = None  # what BertModel(add_pooling_layer=False) holds
    return model


@pytest.fixture(scope="module", params=REBUILD_KINDS)
def exported(request, tmp_path_factory):
    """(original pruned model, packed path): layers pruned dense / unstructured / 4-block (K = 74 leaves a
    partial trailing block in ffn.down), so every layout is unpacked."""
    model = _model(request.param)
    apply_plan_(model, "mixed")
    path = tmp_path_factory.mktemp("bench") / f"{request.param}.sbert"
    # Not compacted, as the harness exports its own models: the rebuilt weights must equal the originals.
    report_ = sparsebert.export(model, path, verbose=False, compact=False)
    assert {row.layout for row in report_.rows} == {"dense", "unstructured", "block4"}
    return request.param, model, path


# ------------------------------------------------------------------------------------------------ rebuild


@pytest.mark.parametrize("layout", ["dense", "unstructured", "block4"])
@pytest.mark.parametrize("shape", [(7, 10), (5, 8), (1, 3)])
def test_dense_weight_inverts_the_packer(layout, shape):
    rng = np.random.default_rng(sum(shape))
    weight = rng.standard_normal(shape).astype(np.float32)
    weight[rng.random(shape) < 0.6] = 0  # unaligned zeros: partial 4-blocks, empty and full rows
    weight[0] = 0
    arrays = pack_arrays(weight, layout)
    rebuilt = dense_weight(layout, arrays, shape)
    assert rebuilt.dtype == np.float32 and rebuilt.shape == shape
    np.testing.assert_array_equal(rebuilt, weight)


def test_rebuilt_model_has_exactly_the_original_weights(exported):
    kind, original, path = exported
    rebuilt = to_transformers(path)
    assert type(rebuilt) is type(original)
    ours = dict(rebuilt.named_parameters())
    theirs = dict(original.named_parameters())
    assert set(ours) == set(theirs)
    for name, param in theirs.items():
        np.testing.assert_array_equal(ours[name].detach().numpy(), param.detach().numpy(), err_msg=name)


def test_rebuilt_model_computes_the_same_outputs(exported):
    kind, original, path = exported
    rebuilt = to_transformers(path)
    inputs = random_inputs(original.config.vocab_size, [9, 4, 6], seed=3)
    expected, actual = torch_forward(original, inputs), torch_forward(rebuilt, inputs)
    assert set(actual) == set(expected)
    for key in expected:
        # Same weights, same graph, same process: bit-identical.
        np.testing.assert_array_equal(actual[key], expected[key], err_msg=key)


def test_rebuilt_compacted_model_computes_the_same_outputs(tmp_path):
    import torch

    # A compacted file (heads and neurons removed, constants folded into biases) comes back with zero heads and
    # neurons in place of the removed ones: the same function, up to rounding.
    model = _model("sequence_classification", seed=11)
    apply_plan_(model, "unstructured")  # block4 output projections keep heads of size 10 (not a multiple of 4)
    with torch.no_grad():
        layer = model.bert.encoder.layer[0]
        layer.attention.output.dense.weight[:, 10:20] = 0  # head 1 silent
        layer.intermediate.dense.weight[8:16] = 0  # neurons 8..15 constant (their up bias stays)
    path = tmp_path / "compacted.sbert"
    sparsebert.export(model, path, verbose=False)
    assert read_model(path).config["layer_heads"][0] == 3
    rebuilt = to_transformers(path)
    inputs = random_inputs(model.config.vocab_size, [9, 4, 6], seed=3)
    expected, actual = torch_forward(model, inputs), torch_forward(rebuilt, inputs)
    assert set(actual) == set(expected)
    for key in expected:
        np.testing.assert_allclose(actual[key], expected[key], atol=2e-5, err_msg=key)


def test_rebuild_refuses_a_file_it_cannot_fully_map(exported, monkeypatch):
    from sparsebert.bench import models

    _, _, path = exported
    real = models.hf_state_dict

    def dropping(packed):
        state = real(packed)
        state.pop(next(k for k in state if k.endswith("output.LayerNorm.bias")))
        return state

    monkeypatch.setattr(models, "hf_state_dict", dropping)
    with pytest.raises(ValueError, match="parameters not in the file"):
        to_transformers(path)


# ------------------------------------------------------------------------------------------------ ONNX


def test_onnx_export_runs_in_onnxruntime_like_torch(exported, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from sparsebert.bench.onnx_export import IR_VERSION, OPSET, TRACE_SHAPE, export_onnx
    from sparsebert.format import read_model

    kind, original, path = exported
    config = read_model(path).config
    onnx_path = tmp_path / "model.onnx"
    names = export_onnx(to_transformers(path), config, onnx_path)
    assert names == sparsebert.SparseEngine.load(path, num_threads=1).output_names

    proto = onnx.load(str(onnx_path))
    assert proto.ir_version <= IR_VERSION  # readable by DeepSparse's onnx 1.14
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [OPSET]
    assert [i.name for i in proto.graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    for inp in proto.graph.input:
        assert [d.dim_param for d in inp.type.tensor_type.shape.dim] == ["batch", "seq"]

    # A shape other than the traced one, right-padded: the dynamic axes and the mask must really work.
    inputs = random_inputs(original.config.vocab_size, [13, 5, 9], seed=5)
    assert inputs["input_ids"].shape != TRACE_SHAPE
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = dict(zip(names, session.run(None, inputs)))
    expected = torch_forward(original, inputs)
    assert set(got) == set(expected)
    for key, value in expected.items():
        if key in ("last_hidden_state", "start_logits", "end_logits"):
            assert_close_unpadded(got[key], value, inputs["attention_mask"], atol=1e-4, what=key)
        else:
            assert_close(got[key], value, atol=1e-4, what=key)


# ------------------------------------------------------------------------------------------------ FLOPs


def _bert_base_linears(sparsity: float) -> list[dict]:
    h, inter = 768, 3072
    rows = []
    for i in range(12):
        for name, shape in (("attention.qkv", (3 * h, h)), ("attention.output", (h, h)), ("ffn.up", (inter, h)),
                            ("ffn.down", (h, inter))):
            rows.append({"name": f"layers.{i}.{name}", "shape": list(shape),
                         "nnz": round((1 - sparsity) * shape[0] * shape[1])})
    rows.append({"name": "pooler", "shape": [h, h], "nnz": h * h})
    return rows


def test_flops_of_bert_base_at_1x128():
    config = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12}
    work = flops.encoder_flops(config, _bert_base_linears(0.9), batch=1, seq=128)
    # Per layer: N*K = 3*768*768 + 768*768 + 2*3072*768 = 7_077_888 weights, M = 128 tokens.
    linear_dense = 2 * 128 * 7_077_888 * 12 + 2 * 1 * 768 * 768  # the pooler sees one vector per sequence
    attention = 4 * 1 * 128 * 128 * 768 * 12
    assert work["linear_dense_flop"] == linear_dense == 21_744_451_584
    assert work["attention_flop"] == attention == 603_979_776
    assert work["dense_flop"] == linear_dense + attention
    # 10% of the encoder weights remain: the 2.17 GFLOP of useful linear work of BENCHMARKS.md.
    encoder_real = sum(2 * 128 * round(0.1 * n * k) for n, k in
                       [(2304, 768), (768, 768), (3072, 768), (768, 3072)]) * 12
    assert work["linear_real_flop"] == encoder_real + 2 * 768 * 768
    # Structured compaction: attention runs over the kept heads only.
    compacted = dict(config, layer_heads=[12] * 6 + [6] * 6)
    assert flops.attention_flops(compacted, 1, 128) == attention * 3 // 4
    assert round(encoder_real / 1e9, 2) == 2.17
    assert work["real_gflop"] == pytest.approx((encoder_real + 2 * 768 * 768 + attention) / 1e9)
    # Attention grows with S^2, linears with S; the per-sequence pooler with B only.
    w2 = flops.encoder_flops(config, _bert_base_linears(0.9), batch=2, seq=256)
    assert w2["attention_flop"] == 8 * attention
    assert w2["linear_dense_flop"] == 4 * 2 * 128 * 7_077_888 * 12 + 2 * 2 * 768 * 768


def test_gflops():
    assert flops.gflops(2e9, 1000.0) == pytest.approx(2.0)
    assert flops.gflops(5e9, 10.0) == pytest.approx(500.0)


# ------------------------------------------------------------------------------------------------ timing


def test_interleaved_rotates_and_rewarms():
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    times = timing.interleaved(fns, runs=4, warmup=1, rewarm=True)
    assert {k: len(v) for k, v in times.items()} == {"a": 4, "b": 4, "c": 4}
    warm, timed = calls[:3], calls[3:]
    assert warm == ["a", "b", "c"]
    # Each turn is an untimed call and a timed call of the same engine; the first engine rotates.
    assert timed[0::2] == timed[1::2]
    assert timed[0::2] == list("abc" "bca" "cab" "abc")

    calls.clear()
    timing.interleaved(fns, runs=2, warmup=0, rewarm=False)
    assert calls == list("abc" "bca")


def test_interleaved_times_what_it_calls():
    times = timing.interleaved({"slow": lambda: time.sleep(0.02), "fast": lambda: None}, runs=3, warmup=0)
    assert min(times["slow"]) >= 19.0
    assert max(times["fast"]) < 5.0


def test_summarize():
    stats = timing.summarize([float(x) for x in range(1, 12)])  # 1..11 ms
    assert stats["median_ms"] == 6.0
    assert stats["p10_ms"] == pytest.approx(2.0)
    assert stats["min_ms"] == 1.0 and stats["runs"] == 11
    with pytest.raises(ValueError):
        timing.summarize([])


# ------------------------------------------------------------------------------------------------ benchmarks


@pytest.fixture(scope="module")
def tiny_result():
    from sparsebert.bench import random_source, run_engine_bench

    pytest.importorskip("onnxruntime")
    with random_source("tiny", 0.9, block=4, head="question_answering") as source:
        return run_engine_bench(source, batch=2, seq=16, threads=1, runs=3, warmup=1, pause_ms=0,
                                command="test")


# The harness takes every family and head: the peers run the transformers model rebuilt from the packed file,
# and all engines must agree on every output.
@pytest.mark.slow
@pytest.mark.parametrize("head", ["none", "sequence_classification", "question_answering", "token_classification"])
@pytest.mark.parametrize("name", ["tiny-roberta", "tiny-distilbert", "tiny"])
def test_engine_bench_every_family_and_head(name, head):
    from sparsebert.bench import random_source, run_engine_bench

    pytest.importorskip("onnxruntime")
    import torch

    from sparsebert.bench.onnx_export import bert_outputs
    from sparsebert.bench.runners import make_inputs

    with random_source(name, 0.9, head=head) as source:
        r = run_engine_bench(source, batch=2, seq=16, threads=1, runs=1, warmup=0, pause_ms=0, profile_runs=0,
                             command="test")
        # Every output (heads included) of the module PyTorch and ONNX Runtime run, against sparsebert's.
        engine = sparsebert.SparseEngine.load(source.path)
        inputs = make_inputs(2, 16, engine.config["vocab_size"], seed=1)
        module = bert_outputs(to_transformers(source.path), engine.config)
        with torch.no_grad():
            theirs = module(*(torch.from_numpy(inputs[k]) for k in engine.input_names))
        ours = engine.run(inputs)
        assert list(ours) == engine.output_names and len(theirs) == len(ours)
        for key, value in zip(ours, theirs):
            assert_close(ours[key], value.numpy(), what=f"{name}/{head}/{key}")
    assert r["agree"] and max(r["agreement"].values()) < 1e-4, r["agreement"]
    assert set(r["engines"]) == {"sparsebert", "onnxruntime", "pytorch"}


def test_engine_bench_int8_runs_fp32_twin_and_ort_int8():
    from sparsebert.bench import random_source, run_engine_bench
    from sparsebert.bench.report import engine_text

    pytest.importorskip("onnxruntime")
    with random_source("tiny", 0.9, block=4, head="sequence_classification", quantize="int8") as source:
        r = run_engine_bench(source, batch=2, seq=16, threads=1, runs=2, warmup=0, pause_ms=0, profile_runs=0,
                             command="test")
    assert set(r["engines"]) == {"sparsebert", "sparsebert_fp32", "onnxruntime", "onnxruntime_int8", "pytorch"}
    assert r["model"]["layouts"] == {"block4_int8": 8, "dense": 2}
    # The fp32 twin runs exactly the dequantized weights the peers run; the int8 engines only approximately.
    assert r["agreement"]["sparsebert_fp32 vs onnxruntime"] < 1e-4
    assert 0 < r["agreement"]["sparsebert vs sparsebert_fp32"] < r["agreement_atol"]["sparsebert vs sparsebert_fp32"]
    assert r["agreement_atol"]["sparsebert_fp32 vs pytorch"] == 1e-3
    assert r["agree"]
    text = engine_text(r)
    assert ") fp32 " in text and "int8 dynamic" in text and "-> OK" in text


def test_engine_bench_result(tiny_result):
    r = tiny_result
    assert list(r["engines"]) == ["sparsebert", "onnxruntime", "pytorch"]
    assert r["agree"] and max(r["agreement"].values()) < 1e-4
    assert set(r["agreement"]) == {"sparsebert vs onnxruntime", "sparsebert vs pytorch", "onnxruntime vs pytorch"}
    assert r["model"]["layouts"] == {"block4": 8, "dense": 1}  # the qa_outputs head stays dense
    for name, e in r["engines"].items():
        assert len(e["times_ms"]) == 3 and all(t > 0 for t in e["times_ms"])
        assert e["median_ms"] == pytest.approx(float(np.median(e["times_ms"])), abs=1e-3)
        assert e["p10_ms"] <= e["median_ms"] <= e["p90_ms"]
        assert e["throughput_seq_s"] == pytest.approx(2 / (e["median_ms"] / 1e3))
        assert e["dense_gflops"] == pytest.approx(r["flops"]["dense_flop"] / (e["median_ms"] / 1e3) / 1e9)
        assert e["real_gflops"] < e["dense_gflops"]
    for peer in ("onnxruntime", "pytorch"):
        assert r["ratios"][peer] == pytest.approx(r["engines"]["sparsebert"]["median_ms"] /
                                                  r["engines"][peer]["median_ms"])
    ops = set(r["profile_ms"])
    assert ops >= {"qkv", "attention"} and ("ffn" in ops or "ffn_tiled" in ops)
    env = r["environment"]
    assert env["command"] == "test" and env["isa"] == r["engines"]["sparsebert"]["info"]["isa"]
    assert env["cpu"] and env["versions"]["numpy"] and env["date"] and env["extension"]["built"]
    json.loads(json.dumps(r))  # plain JSON types only


def test_engine_report_says_everything(tiny_result):
    text = report.engine_text(tiny_result)
    for fragment in ("random tiny, 90% 4-block", "batch 2 × seq 16", "1 threads", "sparsebert", "ONNX Runtime",
                     "PyTorch", "median ms", "p10 ms", "-> OK", "per-op profile", "GFLOP"):
        assert fragment in text, fragment
    md = report.engine_markdown(tiny_result)
    assert "Command: `test`" in md and "| engine" in md


def test_engine_bench_flags_outputs_that_disagree(monkeypatch):
    from sparsebert.bench import random_source, run_engine_bench, runners

    real = runners.pytorch_runner

    def wrong(*args, **kwargs):
        runner = real(*args, **kwargs)
        good = runner.hidden
        runner.hidden = lambda out: good(out) + 0.01  # what a broken mask or bias looks like
        return runner

    monkeypatch.setattr(runners, "pytorch_runner", wrong)
    with random_source("tiny", 0.5) as source:
        r = run_engine_bench(source, batch=1, seq=8, threads=1, runs=1, warmup=0, pause_ms=0,
                             peers=["sparsebert", "pytorch"], profile_runs=0)
    assert not r["agree"]
    assert r["agreement"]["sparsebert vs pytorch"] == pytest.approx(0.01, rel=0.1)
    assert "MISMATCH" in report.engine_text(r)


def test_engine_bench_refuses_bad_settings():
    from sparsebert.bench import random_source, run_engine_bench

    with random_source("tiny", 0.5) as source:
        with pytest.raises(ValueError, match="longest sequence the model accepts"):
            run_engine_bench(source, seq=1000, runs=1, peers=["sparsebert"])
        with pytest.raises(ValueError, match="unknown peer"):
            run_engine_bench(source, peers=["sparsebert", "tensorflow"])
        with pytest.raises(ValueError, match="must include sparsebert"):
            run_engine_bench(source, peers=["pytorch"])


def test_sweep_on_tiny(tmp_path):
    pytest.importorskip("matplotlib")
    from sparsebert.bench import plot, run_sweep, sweep_markdown

    result = run_sweep("tiny", [0.0, 0.9], block=1, batch=1, seq=8, threads=1, runs=2, warmup=0, pause_ms=0,
                       peers=["sparsebert", "pytorch"], command="sweep-test")
    assert [p["sparsity"] for p in result["points"]] == [0.0, 0.9]
    assert result["points"][0]["model"]["layouts"] == {"dense": 9}
    assert result["points"][1]["model"]["layouts"] == {"unstructured": 8, "dense": 1}
    assert all(p["agree"] for p in result["points"])
    md = sweep_markdown(result)
    table = [line for line in md.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 2
    assert table[2].split("|")[1].strip() == "0%" and table[3].split("|")[1].strip() == "90%"
    plot.sweep_plot(result, tmp_path / "sweep.png")
    assert (tmp_path / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_kernel_bench_small():
    from sparsebert.bench import kernel_markdown, run_kernel_bench

    result = run_kernel_bench(shapes=[(40, 36)], tokens=[16], threads=[1], runs=2, sparsity=0.75, command="k")
    rows = result["rows"]
    assert [r["layout"] for r in rows] == ["dense", "unstructured", "block4", "block4_int8"]
    peak = result["fma_peak_gflops"][result["isa"]]
    assert peak > 0
    for r in rows:
        expected_nnz = 40 * 36 if r["layout"] == "dense" else round(0.25 * 40 * 36)
        assert r["nnz"] == expected_nnz
        assert r["real_gflops"] == pytest.approx(2 * 16 * r["nnz"] / (r["median_ms"] * 1e-3) / 1e9)
        assert r["dense_gflops"] == pytest.approx(2 * 16 * 40 * 36 / (r["median_ms"] * 1e-3) / 1e9)
        int8_peak = 4 if r["layout"] == "block4_int8" else 1  # a VNNI dot product: 4x an FMA's multiply-adds
        assert r["peak_fraction"] == pytest.approx(r["real_gflops"] / (peak * int8_peak))
    assert rows[0]["speedup_vs_dense"] is None
    assert rows[1]["speedup_vs_dense"] == pytest.approx(rows[0]["median_ms"] / rows[1]["median_ms"])
    md = kernel_markdown(result)
    assert "| 40 × 36 |     16 | 75% unstructured |" in md


# ------------------------------------------------------------------------------------------------ tables


def _sweep_result(deepsparse: bool) -> dict:
    def point(sparsity, sb, ort, pt, ds=None):
        engines = {"sparsebert": {"median_ms": sb, "real_gflops": 10.0}, "onnxruntime": {"median_ms": ort},
                   "pytorch": {"median_ms": pt}}
        ratios = {"onnxruntime": sb / ort, "pytorch": sb / pt}
        if ds is not None:
            engines["deepsparse"] = {"median_ms": ds}
            ratios["deepsparse"] = sb / ds
        layouts = {"dense": 49} if sparsity == 0 else {"unstructured": 48, "dense": 1}
        return {"sparsity": sparsity, "engines": engines, "ratios": ratios, "model": {"layouts": layouts},
                "agree": True, "agreement": {"sparsebert vs onnxruntime": 2e-6}}

    env = {"cpu": "Test CPU", "cpus_available": 2, "isa": "avx512", "threads": 2, "commit": "abc1234",
           "date": "2026-01-02T03:04:05+00:00", "command": "sparsebert bench --sweep"}
    return {"kind": "sweep", "environment": env, "model_name": "bert-base", "block": 1, "batch": 1, "seq": 128,
            "threads": 2, "runs": 20, "warmup": 3, "pause_ms": 60.0, "rewarm": True,
            "engines_run": ["sparsebert", "onnxruntime", "pytorch"] + (["deepsparse"] if deepsparse else []),
            "points": [point(0.0, 120.0, 60.0, 130.0, 58.0 if deepsparse else None),
                       point(0.9, 30.0, 60.0, 130.0, 25.0 if deepsparse else None)]}


def test_sweep_markdown_table_format():
    md = sweep_report.sweep_markdown(_sweep_result(deepsparse=False))
    lines = md.splitlines()
    assert lines[0] == ("### bert-base: latency vs sparsity (unstructured magnitude pruning, fp32), batch 1 × seq 128, "
                        "2 threads")
    assert "Machine: Test CPU, 2 CPUs available, isa avx512, 2 threads, commit abc1234, 2026-01-02" in lines
    assert "Command: `sparsebert bench --sweep`" in lines
    table = [line for line in lines if line.startswith("|")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    assert header == ["sparsity", "layouts", "sparsebert ms", "ORT ms", "sparsebert / ORT", "PyTorch ms",
                      "sparsebert / PyTorch", "sparsebert GFLOP/s real"]
    assert set(table[1]) <= set("|-:")
    assert len({len(line) for line in table}) == 1  # aligned
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table[2:]]
    assert rows == [["0%", "dense 49", "120.0", "60.00", "2.00×", "130.0", "0.92×", "10.0"],
                    ["90%", "unstructured 48, dense 1", "30.00", "60.00", "0.50×", "130.0", "0.23×", "10.0"]]
    assert "DeepSparse" not in md


def test_sweep_markdown_with_deepsparse_says_it_is_not_interleaved():
    md = sweep_report.sweep_markdown(_sweep_result(deepsparse=True))
    header = [c.strip() for c in next(line for line in md.splitlines() if line.startswith("|")).strip("|").split("|")]
    assert header[-3:] == ["DeepSparse ms *", "sparsebert / DeepSparse", "sparsebert GFLOP/s real"]
    assert "own interpreter" in md and "same round-robin" in md
    last = [c.strip() for c in [line for line in md.splitlines() if line.startswith("|")][-1].strip("|").split("|")]
    assert last[-3:] == ["25.00", "1.20×", "10.0"]  # 30 ms / 25 ms


# ------------------------------------------------------------------------------------------------ misc


DEEPSPARSE_PYTHON = os.path.expanduser("~/.cache/sparsebert-peers/deepsparse/bin/python")


def test_deepsparse_peer_refuses_a_bad_interpreter(tmp_path):
    from sparsebert.bench.deepsparse_peer import DeepSparseError, deepsparse_runner

    with pytest.raises(DeepSparseError, match="not an executable"):
        deepsparse_runner(str(tmp_path / "no-python"), "m.onnx", {}, threads=1)


def test_deepsparse_peer_reports_a_driver_that_dies(tmp_path):
    from sparsebert.bench.deepsparse_peer import DeepSparseError, deepsparse_runner

    # This interpreter has no deepsparse module: the driver exits at its import, and the error says so.
    inputs = {"input_ids": np.ones((1, 4), np.int64)}
    with pytest.raises(DeepSparseError, match="exited.*deepsparse"):
        deepsparse_runner(sys.executable, str(tmp_path / "m.onnx"), inputs, threads=1)


@pytest.mark.skipif(not os.access(DEEPSPARSE_PYTHON, os.X_OK), reason="no DeepSparse environment "
                    "(tools/deepsparse_env.sh creates one)")
def test_deepsparse_takes_its_turns_and_agrees():
    from sparsebert.bench import random_source, run_engine_bench

    with random_source("tiny", 0.9) as source:
        r = run_engine_bench(source, batch=2, seq=16, threads=1, runs=3, warmup=1, pause_ms=0, profile_runs=0,
                             peers=["sparsebert"], deepsparse_python=DEEPSPARSE_PYTHON)
    assert r["deepsparse_error"] is None
    assert list(r["engines"]) == ["sparsebert", "deepsparse"] and r["interleaved"] == ["sparsebert", "deepsparse"]
    assert len(r["engines"]["deepsparse"]["times_ms"]) == 3
    assert r["agreement"]["sparsebert vs deepsparse"] < 1e-4
    assert r["engines"]["deepsparse"]["info"]["version"].startswith("1.")


def test_cli_parser_and_bench_package_import_nothing_heavy():
    code = (
        "import sys\n"
        "import sparsebert.cli, sparsebert.bench, sparsebert.bench.cli, sparsebert.bench.report\n"
        "sparsebert.cli._parser('bench', sparsebert.bench.cli).parse_args(['bench', '--random', 'tiny'])\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'onnx', 'onnxruntime', 'matplotlib', 'sparsebert._core')"
        " if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""
