"""SparseEngine against transformers (eager attention, fp32) on real and random BERT weights."""

from __future__ import annotations

import numpy as np
import pytest

import sparsebert
from sparsebert import SparseEngine
from sparsebert.format import read_model
from sparsebert.tuning import Tuning

from conftest import (
    AVAILABLE_ISAS,
    ENCODER_LINEAR_SUFFIXES,
    MODEL_KINDS,
    PARITY_ATOL,
    PRUNE_PLANS,
    apply_plan_,
    assert_close,
    assert_close_unpadded,
    assert_layer_layouts,
    load_minilm,
    make_model,
    random_inputs,
    report_layouts,
    report_rows,
    save_checkpoint,
    torch_forward,
)

EXPECTED_OUTPUTS = {
    "base": {"last_hidden_state", "pooler_output"},
    "sequence_classification": {"last_hidden_state", "pooler_output", "logits"},
    "question_answering": {"last_hidden_state", "start_logits", "end_logits"},
}


def assert_matches_torch(out: dict, ref: dict, mask, what=""):
    """Compares every output torch produced; per-token outputs only on unpadded positions."""
    assert set(out) == set(ref), f"{what}: outputs {sorted(out)}, expected {sorted(ref)}"
    for key, expected in ref.items():
        actual = out[key]
        assert isinstance(actual, np.ndarray) and actual.dtype == np.float32, f"{what}/{key}: {type(actual)}"
        assert actual.shape == expected.shape, f"{what}/{key}: shape {actual.shape} != {expected.shape}"
        if key in ("last_hidden_state", "start_logits", "end_logits"):
            assert_close_unpadded(actual, expected, mask, what=f"{what}/{key}")
        else:
            assert_close(actual, expected, what=f"{what}/{key}")


# ------------------------------------------------------------------------------------------------------------
# (a) real all-MiniLM-L6-v2 weights, magnitude-pruned with sparsebert.pruning
# ------------------------------------------------------------------------------------------------------------

MINILM_VARIANTS = {
    # name: (sparsity, block, layout the exporter must choose for the encoder linears)
    "dense0": (0.0, 1, "dense"),
    "unstructured80": (0.8, 1, "unstructured"),
    "unstructured90": (0.9, 1, "unstructured"),
    "block4_90": (0.9, 4, "block4"),
}


@pytest.fixture(scope="session")
def minilm_exports(minilm_dir, minilm_batch, tmp_path_factory):
    """Each MiniLM variant pruned, run through transformers once, and exported once per session."""
    from sparsebert.pruning import prune_bert_

    out_dir = tmp_path_factory.mktemp("minilm")
    exports = {}
    for name, (sparsity, block, _) in MINILM_VARIANTS.items():
        model = load_minilm(minilm_dir)
        prune_bert_(model, sparsity, block)
        ref = torch_forward(model, minilm_batch)
        path = out_dir / f"{name}.sbert"
        report = sparsebert.export(model, path, verbose=False)
        exports[name] = (path, report, ref)
        del model
    return exports


@pytest.mark.slow
@pytest.mark.parametrize("variant", list(MINILM_VARIANTS))
def test_minilm_parity(variant, isa, minilm_exports, minilm_batch):
    path, _, ref = minilm_exports[variant]
    engine = SparseEngine.load(path, isa=isa)
    assert engine.isa == isa
    out = engine.run(minilm_batch)
    assert_matches_torch(out, ref, minilm_batch["attention_mask"], what=f"MiniLM {variant} on {isa}")


@pytest.mark.slow
@pytest.mark.parametrize("variant", list(MINILM_VARIANTS))
def test_minilm_export_layouts(variant, minilm_exports):
    path, report, _ = minilm_exports[variant]
    sparsity, _, layout = MINILM_VARIANTS[variant]
    assert_layer_layouts(report, {i: layout for i in range(6)})
    rows = {row["name"]: row for row in report_rows(report)}
    config = read_model(path).config
    for i in range(6):
        if config.get("layer_heads", [12] * 6)[i] < 12 or config.get("layer_intermediate", [1536] * 6)[i] < 1536:
            continue  # structured compaction removed zero heads or neurons: other shapes, other sparsity
        for suffix in ENCODER_LINEAR_SUFFIXES:
            row = rows[f"layers.{i}.{suffix}"]
            # magnitude pruning hits the target sparsity per matrix (to one weight / block).
            assert abs(row["sparsity"] - sparsity) < 1e-3, (row["name"], row["sparsity"])
    # Unpruned pooler stays dense.
    assert rows["pooler"]["layout"] == "dense"
    assert rows["pooler"]["sparsity"] < 0.01
    # Sparse variants are smaller than the dense one.
    total = sum(r["bytes"] for r in report_rows(report))
    dense_total = sum(r["bytes"] for r in report_rows(minilm_exports["dense0"][1]))
    if sparsity >= 0.8:
        assert total < 0.6 * dense_total, (total, dense_total)


def test_minilm_export_from_checkpoint_dir(minilm_dir, minilm_batch, tmp_path):
    # The real checkpoint directory (sentence-transformers key names, no "bert." prefix).
    model = load_minilm(minilm_dir)
    ref = torch_forward(model, minilm_batch)
    path = tmp_path / "minilm_dir.sbert"
    report = sparsebert.export(minilm_dir, path, verbose=False)
    assert set(report_layouts(report).values()) == {"dense"}
    out = SparseEngine.load(path).run(minilm_batch)
    assert_matches_torch(out, ref, minilm_batch["attention_mask"], what="MiniLM from dir")


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["block4_90", "unstructured90"])
def test_hidden_states_match_torch(variant, isa, minilm_exports, minilm_dir, minilm_batch):
    """output_hidden_states: the embeddings' output and every layer's, as transformers gives them, on the real
    MiniLM weights (compacted: some layers lost heads or neurons, the hidden size stays)."""
    import torch

    from sparsebert.pruning import prune_bert_

    path, _, _ = minilm_exports[variant]
    sparsity, block, _ = MINILM_VARIANTS[variant]
    model = load_minilm(minilm_dir)
    prune_bert_(model, sparsity, block)
    with torch.no_grad():
        expected = model(**{k: torch.from_numpy(np.asarray(v, np.int64)) for k, v in minilm_batch.items()},
                         output_hidden_states=True).hidden_states
    out = SparseEngine.load(path, isa=isa).run(minilm_batch, output_hidden_states=True)
    states = out["hidden_states"]
    assert states.dtype == np.float32 and states.shape == (7, *minilm_batch["input_ids"].shape, 384)
    for i, reference in enumerate(expected):
        assert_close_unpadded(states[i], reference.numpy(), minilm_batch["attention_mask"], what=f"hidden state {i}")
    np.testing.assert_array_equal(states[-1], out["last_hidden_state"])
    assert "hidden_states" not in SparseEngine.load(path).run(minilm_batch)  # only when asked for
    assert "hidden_states" in SparseEngine.load(path).run(minilm_batch, output_hidden_states=np.True_)
    with pytest.raises(TypeError, match="output_hidden_states"):
        SparseEngine.load(path).run(minilm_batch, output_hidden_states=1)


def test_minilm_padding_does_not_leak(minilm_exports, minilm_batch):
    # Each sentence alone (no padding) gives the same result as inside the padded batch.
    path, _, _ = minilm_exports["unstructured90"]
    engine = SparseEngine.load(path)
    batched = engine.run(minilm_batch)
    for b in (0, 1, 4):
        n = int(minilm_batch["attention_mask"][b].sum())
        single = {k: v[b : b + 1, :n] for k, v in minilm_batch.items()}
        out = engine.run(single)
        assert_close(out["last_hidden_state"][0], batched["last_hidden_state"][b, :n], what=f"sentence {b}")
        assert_close(out["pooler_output"][0], batched["pooler_output"][b], what=f"pooler {b}")


# ------------------------------------------------------------------------------------------------------------
# (b) random configurations
# ------------------------------------------------------------------------------------------------------------

# kind -> config; hidden 40 (not a multiple of 16), head dim 10, intermediate 74 (not a multiple of 4).
KIND_CONFIGS = {
    "base": dict(num_hidden_layers=3, hidden_act="gelu"),
    "sequence_classification": dict(num_hidden_layers=2, hidden_act="gelu_new", num_labels=3),
    "question_answering": dict(num_hidden_layers=3, hidden_act="relu", type_vocab_size=3),
}

# name -> (lengths, seq_len)
INPUT_SETS = {
    "seq1": ([1], 1),
    "b3_seq77": ([77, 30, 1], 77),
    "b2_seq5": ([5, 3], 5),
}


def input_sets(config):
    return {
        name: random_inputs(config.vocab_size, lengths, seq, config.type_vocab_size, seed=i)
        for i, (name, (lengths, seq)) in enumerate(INPUT_SETS.items())
    }


_model_cache: dict = {}


def pruned_model(kind, plan):
    key = (kind, plan)
    if key not in _model_cache:
        model = make_model(kind, seed=len(_model_cache) + 10, **KIND_CONFIGS[kind])
        expected = apply_plan_(model, plan)
        refs = {name: (inp, torch_forward(model, inp)) for name, inp in input_sets(model.config).items()}
        _model_cache[key] = (model, expected, refs)
    return _model_cache[key]


def export_from(model, source, tmp_path, **kwargs):
    path = tmp_path / "model.sbert"
    if source == "object":
        src = model
    else:
        src = save_checkpoint(model, tmp_path / f"ckpt_{source}", fmt=source)
    report = sparsebert.export(src, path, verbose=False, **kwargs)
    return path, report


@pytest.mark.parametrize("source", ["object", "safetensors", "bin"])
@pytest.mark.parametrize("plan", list(PRUNE_PLANS))
@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_random_model_parity(kind, plan, source, tmp_path):
    model, expected, refs = pruned_model(kind, plan)
    path, report = export_from(model, source, tmp_path)
    assert_layer_layouts(report, expected)
    for isa in AVAILABLE_ISAS:
        engine = SparseEngine.load(path, isa=isa)
        for name, (inp, ref) in refs.items():
            out = engine.run(inp)
            assert set(out) == EXPECTED_OUTPUTS[kind]
            assert_matches_torch(out, ref, inp["attention_mask"], what=f"{kind}/{plan}/{source}/{isa}/{name}")


@pytest.mark.parametrize("layout", ["dense", "unstructured", "block4"])
@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_forced_layout_parity(kind, layout, tmp_path):
    model, _, refs = pruned_model(kind, "mixed")
    path, report = export_from(model, "object", tmp_path, layout=layout)
    layouts = report_layouts(report)
    for i in range(model.config.num_hidden_layers):
        for suffix in ENCODER_LINEAR_SUFFIXES:
            assert layouts[f"layers.{i}.{suffix}"] == layout
    for isa in AVAILABLE_ISAS:
        engine = SparseEngine.load(path, isa=isa)
        for name, (inp, ref) in refs.items():
            assert_matches_torch(engine.run(inp), ref, inp["attention_mask"], what=f"{kind}/{layout}/{isa}/{name}")


@pytest.mark.parametrize("hidden_act", ["gelu", "gelu_new", "gelu_pytorch_tanh", "relu"])
def test_hidden_act_parity(hidden_act, tmp_path):
    model = make_model("base", seed=5, num_hidden_layers=1, hidden_act=hidden_act)
    apply_plan_(model, "unstructured")
    inp = random_inputs(model.config.vocab_size, [9, 4, 7], seed=2)
    ref = torch_forward(model, inp)
    path, _ = export_from(model, "object", tmp_path)
    for isa in AVAILABLE_ISAS:
        out = SparseEngine.load(path, isa=isa).run(inp)
        assert_matches_torch(out, ref, inp["attention_mask"], what=f"{hidden_act}/{isa}")


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_wide_odd_sizes_parity(kind, tmp_path):
    # hidden 68 > one 64-feature tile, head dim 17 (odd), intermediate 130; 65 tokens (two token tiles).
    model = make_model(kind, seed=17, hidden_size=68, num_attention_heads=4, intermediate_size=130,
                       num_hidden_layers=3, max_position_embeddings=70, hidden_act="gelu_pytorch_tanh")
    expected = apply_plan_(model, "mixed")
    inp = random_inputs(model.config.vocab_size, [65, 64, 2], seed=9)
    ref = torch_forward(model, inp)
    path, report = export_from(model, "object", tmp_path)
    assert_layer_layouts(report, expected)
    for isa in AVAILABLE_ISAS:
        out = SparseEngine.load(path, isa=isa, num_threads=2).run(inp)
        assert_matches_torch(out, ref, inp["attention_mask"], what=f"wide/{kind}/{isa}")


# Sequences that fill whole 64-token tiles take attention's gather-free path (GEMMs on the tiles, the keys in
# 64-token pieces); padded and one-token sequences in the same batch must still match.
@pytest.mark.parametrize("seq", [64, 128, 192])
def test_tile_aligned_attention_parity(seq, tmp_path):
    model = make_model("base", seed=29, num_hidden_layers=2, hidden_size=68, num_attention_heads=4,
                       intermediate_size=130, max_position_embeddings=200)
    apply_plan_(model, "unstructured")
    inp = random_inputs(model.config.vocab_size, [seq, seq - 37, 1], seq_len=seq, seed=seq)
    ref = torch_forward(model, inp)
    path, _ = export_from(model, "object", tmp_path)
    for isa in AVAILABLE_ISAS:
        for threads in (1, 2):
            out = SparseEngine.load(path, isa=isa, num_threads=threads).run(inp)
            assert_matches_torch(out, ref, inp["attention_mask"], what=f"aligned seq={seq}/{isa}/{threads}")


# FFN up and down run fused (ops/fused_ffn.h) when both are sparse and FFN down's K-blocks are whole row groups
# of FFN up. The fused op must give exactly the unfused result (same sums in the same order), including an
# intermediate size that ends inside a 4-block, and the engine falls back when the tiles do not share out evenly.
@pytest.mark.parametrize("layout", ["unstructured", "block4"])
@pytest.mark.parametrize("intermediate", [300, 302, 74])
def test_fused_ffn_equals_unfused(layout, intermediate, tmp_path):
    model = make_model("base", seed=23, num_hidden_layers=2, intermediate_size=intermediate)
    apply_plan_(model, "unstructured" if layout == "unstructured" else "block4")
    path, _ = export_from(model, "object", tmp_path, layout=layout)
    ref_inp = random_inputs(model.config.vocab_size, [77, 51], seed=4)  # 154 tokens: 3 tiles
    inp = random_inputs(model.config.vocab_size, [64, 64], seed=5)  # 2 tiles
    ref = torch_forward(model, inp)
    for isa in AVAILABLE_ISAS:
        fused = SparseEngine.load(path, isa=isa, num_threads=2)
        unfused = SparseEngine.load(path, isa=isa, num_threads=2, tuning=Tuning(fuse_ffn=False))
        assert "ffn" in fused.profile(inp, runs=1) and "ffn_tiled" in unfused.profile(inp, runs=1)
        a, b = fused.run(inp), unfused.run(inp)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{layout}/I={intermediate}/{isa}/{key}")
        assert_matches_torch(a, ref, inp["attention_mask"], what=f"fused/{layout}/I={intermediate}/{isa}")
        # Three tiles over two threads: the unfused ops, which split rows to balance the threads.
        assert "ffn_tiled" in fused.profile(ref_inp, runs=1)


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_arbitrary_masks(kind, tmp_path):
    # The mask only removes keys: left padding and holes in the middle behave as in transformers.
    model, _, _ = pruned_model(kind, "mixed")
    inp = random_inputs(model.config.vocab_size, [12, 12, 12, 12], seed=10)
    mask = inp["attention_mask"]
    mask[0, :5] = 0  # left padding
    mask[1, 3:7] = 0  # hole
    mask[2, ::2] = 0  # every other token
    mask[3, 1:] = 0  # a single key
    inp["input_ids"][mask == 0] = 0
    ref = torch_forward(model, inp)
    path, _ = export_from(model, "object", tmp_path)
    for isa in AVAILABLE_ISAS:
        out = SparseEngine.load(path, isa=isa).run(inp)
        assert_matches_torch(out, ref, mask, what=f"masks/{kind}/{isa}")


def test_model_without_pooler(tmp_path):
    import torch
    import transformers

    from conftest import make_config

    torch.manual_seed(0)
    model = transformers.BertModel(make_config(num_hidden_layers=1), add_pooling_layer=False).eval()
    inp = random_inputs(model.config.vocab_size, [6, 2], seed=3)
    ref = torch_forward(model, inp)
    assert set(ref) == {"last_hidden_state"}
    path, report = export_from(model, "object", tmp_path)
    assert "pooler" not in report_layouts(report)
    out = SparseEngine.load(path).run(inp)
    assert_matches_torch(out, ref, inp["attention_mask"], what="no pooler")


def test_max_length_sequence(tmp_path):
    # seq == max_position_embeddings is allowed (and uses the last position embedding).
    model, _, _ = pruned_model("base", "unstructured")
    inp = random_inputs(model.config.vocab_size, [80, 13], seed=4)
    ref = torch_forward(model, inp)
    path, _ = export_from(model, "object", tmp_path)
    out = SparseEngine.load(path).run(inp)
    assert_matches_torch(out, ref, inp["attention_mask"], what="seq 80")


def test_pruning_module_on_random_model(tmp_path):
    # sparsebert.pruning.prune_bert_ + export + engine on a random classifier.
    from sparsebert.pruning import prune_bert_

    model = make_model("sequence_classification", seed=21, num_hidden_layers=2)
    prune_bert_(model, 0.75, 4)
    inp = random_inputs(model.config.vocab_size, [12, 3, 8], seed=5)
    ref = torch_forward(model, inp)
    path, report = export_from(model, "object", tmp_path)
    assert_layer_layouts(report, {0: "block4", 1: "block4"})
    out = SparseEngine.load(path).run(inp)
    assert_matches_torch(out, ref, inp["attention_mask"], what="prune_bert_ 75% block4")


# ------------------------------------------------------------------------------------------------------------
# Report contents
# ------------------------------------------------------------------------------------------------------------


def test_report_rows_describe_the_weights(small_model):
    model = small_model.model
    rows = {row["name"]: row for row in report_rows(small_model.report)}
    bert = model.bert
    h = model.config.hidden_size
    for i, layer in enumerate(bert.encoder.layer):
        att = layer.attention
        qkv = np.concatenate(
            [att.self.query.weight.detach().numpy(), att.self.key.weight.detach().numpy(),
             att.self.value.weight.detach().numpy()]
        )
        mats = {
            "attention.qkv": qkv,
            "attention.output": att.output.dense.weight.detach().numpy(),
            "ffn.up": layer.intermediate.dense.weight.detach().numpy(),
            "ffn.down": layer.output.dense.weight.detach().numpy(),
        }
        for suffix, w in mats.items():
            row = rows[f"layers.{i}.{suffix}"]
            assert tuple(row["shape"]) == w.shape, (row["name"], row["shape"], w.shape)
            assert row["sparsity"] == pytest.approx(1.0 - np.count_nonzero(w) / w.size, abs=1e-6)
            assert 0.0 <= row["block_fill"] <= 1.0
            assert row["bytes"] > 0
        assert tuple(rows[f"layers.{i}.attention.qkv"]["shape"]) == (3 * h, h)
    assert tuple(rows["pooler"]["shape"]) == (h, h)
    assert tuple(rows["classifier"]["shape"]) == (model.config.num_labels, h)
    # A 4-block pruned matrix has every stored block full; unstructured 90% has many partial blocks.
    assert rows["layers.0.ffn.up"]["block_fill"] == pytest.approx(1.0)
    assert rows["layers.1.ffn.up"]["block_fill"] < 0.6
    # Sparse layouts store far fewer bytes than dense ones of the same shape.
    assert rows["layers.1.ffn.up"]["bytes"] < 0.5 * rows["layers.2.ffn.up"]["bytes"]
    text = str(small_model.report)
    for name, row in rows.items():
        assert name in text
        assert row["layout"] in text


def test_dense_below_threshold(tmp_path):
    model, _, _ = pruned_model("base", "unstructured")  # 90% sparse
    _, report = export_from(model, "object", tmp_path, dense_below=0.95)
    layouts = report_layouts(report)
    assert all(layouts[f"layers.{i}.{s}"] == "dense" for i in range(3) for s in ENCODER_LINEAR_SUFFIXES)
    _, report = export_from(model, "object", tmp_path, dense_below=0.5)
    layouts = report_layouts(report)
    assert all(layouts[f"layers.{i}.{s}"] == "unstructured" for i in range(3) for s in ENCODER_LINEAR_SUFFIXES)


def test_export_verbose_prints_table(tmp_path, capsys):
    model, _, _ = pruned_model("base", "mixed")
    sparsebert.export(model, tmp_path / "m.sbert", verbose=True)
    printed = capsys.readouterr().out
    for name in ("layers.0.attention.qkv", "layers.2.ffn.down"):
        assert name in printed
    for layout in ("dense", "unstructured", "block4"):
        assert layout in printed
    sparsebert.export(model, tmp_path / "m2.sbert", verbose=False)
    assert capsys.readouterr().out == ""


# ------------------------------------------------------------------------------------------------------------
# Input forms and engine options
# ------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cls_engine_inputs(small_model):
    inp = random_inputs(small_model.config.vocab_size, [20, 7, 13], seed=8)
    ref = torch_forward(small_model.model, inp)
    return small_model.path, inp, ref


def assert_identical(a: dict, b: dict, what=""):
    assert set(a) == set(b), what
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=f"{what}/{key}")


def test_engine_properties(small_model):
    engine = SparseEngine.load(small_model.path)
    assert engine.isa == sparsebert.default_isa()
    assert list(engine.input_names) == ["input_ids", "attention_mask", "token_type_ids"]
    assert isinstance(engine.num_threads, int) and engine.num_threads >= 1
    engine = SparseEngine.load(small_model.path, num_threads=2, isa="scalar")
    assert (engine.isa, engine.num_threads) == ("scalar", 2)


def test_isa_env_override_applies_to_engine(small_model, monkeypatch):
    monkeypatch.setenv("SPARSEBERT_ISA", "scalar")
    assert SparseEngine.load(small_model.path).isa == "scalar"
    # An explicit isa argument wins over the environment.
    assert SparseEngine.load(small_model.path, isa=AVAILABLE_ISAS[0]).isa == AVAILABLE_ISAS[0]


def test_list_input_equals_dict_input(cls_engine_inputs, isa):
    path, inp, ref = cls_engine_inputs
    engine = SparseEngine.load(path, isa=isa)
    by_dict = engine.run(inp)
    by_list = engine.run([inp[name] for name in engine.input_names])
    assert_identical(by_dict, by_list, "list vs dict")
    assert_matches_torch(by_dict, ref, inp["attention_mask"], what=isa)


def test_int32_equals_int64(cls_engine_inputs, isa):
    path, inp, _ = cls_engine_inputs
    engine = SparseEngine.load(path, isa=isa)
    out64 = engine.run({k: v.astype(np.int64) for k, v in inp.items()})
    out32 = engine.run({k: v.astype(np.int32) for k, v in inp.items()})
    mixed = engine.run(
        {"input_ids": inp["input_ids"].astype(np.int32), "attention_mask": inp["attention_mask"].astype(np.int64),
         "token_type_ids": inp["token_type_ids"].astype(np.int32)}
    )
    assert_identical(out64, out32, "int32 vs int64")
    assert_identical(out64, mixed, "mixed int dtypes")


def test_non_contiguous_inputs(cls_engine_inputs, isa):
    path, inp, _ = cls_engine_inputs
    engine = SparseEngine.load(path, isa=isa)
    expected = engine.run(inp)
    fortran = {k: np.asfortranarray(v) for k, v in inp.items()}
    assert not fortran["input_ids"].flags.c_contiguous
    assert_identical(engine.run(fortran), expected, "Fortran order")
    strided = {}
    for k, v in inp.items():
        wide = np.zeros((v.shape[0], 2 * v.shape[1]), dtype=v.dtype)
        wide[:, ::2] = v
        strided[k] = wide[:, ::2]
        assert not strided[k].flags.c_contiguous
    assert_identical(engine.run(strided), expected, "strided")
    # Inputs are not modified.
    for k, v in strided.items():
        np.testing.assert_array_equal(v, inp[k])


def test_optional_inputs_default(cls_engine_inputs, small_model):
    path, inp, _ = cls_engine_inputs
    engine = SparseEngine.load(path)
    ids = inp["input_ids"]
    ones = np.ones_like(ids)
    zeros = np.zeros_like(ids)
    full = engine.run({"input_ids": ids, "attention_mask": ones, "token_type_ids": zeros})
    # These ids are right-padded: without a mask the padding counts as text, which run() warns about.
    with pytest.warns(UserWarning, match="no attention_mask"):
        assert_identical(engine.run({"input_ids": ids}), full, "defaults")
    assert_identical(engine.run({"input_ids": ids, "attention_mask": ones}), full, "default token types")
    with pytest.warns(UserWarning, match="no attention_mask"):
        assert_identical(engine.run({"input_ids": ids, "token_type_ids": zeros}), full, "default mask")
    # ... and the defaults are what transformers does without those inputs.
    ref = torch_forward(small_model.model, {"input_ids": ids})
    assert_matches_torch(full, ref, ones, what="defaults vs torch")


def test_num_threads_agree(cls_engine_inputs, isa):
    path, inp, ref = cls_engine_inputs
    out1 = SparseEngine.load(path, isa=isa, num_threads=1).run(inp)
    out2 = SparseEngine.load(path, isa=isa, num_threads=2).run(inp)
    for key in out1:
        if key == "last_hidden_state":
            assert_close_unpadded(out1[key], out2[key], inp["attention_mask"], what=f"threads/{key}")
        else:
            assert_close(out1[key], out2[key], what=f"threads/{key}")
    assert_matches_torch(out2, ref, inp["attention_mask"], what=f"2 threads/{isa}")


def test_repeated_runs_are_deterministic(cls_engine_inputs):
    path, inp, _ = cls_engine_inputs
    engine = SparseEngine.load(path, num_threads=2)
    first = engine.run(inp)
    # A differently shaped run in between must not leave state behind in scratch buffers.
    engine.run(random_inputs(97, [70, 1, 3, 44], seed=99))
    assert_identical(engine.run(inp), first, "repeat")
    # Outputs are fresh arrays, not views of engine buffers that the next run overwrites.
    keep = {k: v.copy() for k, v in first.items()}
    engine.run(random_inputs(97, [5], seed=1))
    assert_identical(first, keep, "outputs overwritten by a later run")


@pytest.mark.parametrize("same_engine", [False, True], ids=["two_engines", "one_engine"])
def test_concurrent_runs(cls_engine_inputs, same_engine):
    # The GIL is released while computing, so Python threads really do run engines concurrently; results
    # must equal sequential ones (no shared scratch state between concurrent calls).
    from concurrent.futures import ThreadPoolExecutor

    path, inp, _ = cls_engine_inputs
    other_inp = random_inputs(97, [31, 2], seed=12)
    engine = SparseEngine.load(path, num_threads=1)
    other = engine if same_engine else SparseEngine.load(path, num_threads=1)
    expected = engine.run(inp)
    expected_other = other.run(other_inp)
    jobs = [(engine, inp), (other, other_inp)] * 8
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda job: job[0].run(job[1]), jobs))
    for i, r in enumerate(results):
        assert_identical(r, expected if i % 2 == 0 else expected_other, f"concurrent run {i}")


def test_parity_check_detects_input_bugs(cls_engine_inputs):
    # The tolerance is tight enough to see the effect of mishandling any one input: an engine that ignored the
    # mask, the token types, or one token would fail the parity tests above by orders of magnitude.
    path, inp, ref = cls_engine_inputs
    engine = SparseEngine.load(path)
    mask = inp["attention_mask"]
    assert inp["token_type_ids"][mask.astype(bool)].any()
    changed_token = {k: v.copy() for k, v in inp.items()}
    changed_token["input_ids"][0, 1] = (changed_token["input_ids"][0, 1] + 1) % 97
    wrong = {
        "mask ignored": dict(inp, attention_mask=np.ones_like(mask)),
        "token types ignored": dict(inp, token_type_ids=np.zeros_like(mask)),
        "one token changed": changed_token,
    }
    for name, bad in wrong.items():
        out = engine.run(bad)
        diff = max(
            float(np.max(np.abs(out["logits"] - ref["logits"]))),
            float(np.max(np.abs((out["last_hidden_state"] - ref["last_hidden_state"])[mask.astype(bool)]))),
        )
        assert diff > 100 * PARITY_ATOL, f"{name}: only {diff:.2g} away from the reference"
