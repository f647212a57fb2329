"""BERT-family architectures and heads against transformers: RoBERTa and DistilBERT (every head), and token
classification for BERT, from model objects and from safetensors directories, pruned sparse and dense."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import sparsebert  # noqa: E402
from sparsebert import SparseEngine  # noqa: E402
from sparsebert.errors import UnsupportedModelError  # noqa: E402

from conftest import AVAILABLE_ISAS, assert_close, assert_close_unpadded, prune_matrix_  # noqa: E402

HEADS = ("Model", "ForSequenceClassification", "ForQuestionAnswering", "ForTokenClassification")
FAMILIES = ("Bert", "Roberta", "DistilBert")
PAD = {"Bert": 0, "Roberta": 1, "DistilBert": 0}


def make_family_config(family: str, **overrides):
    """Small configs with sizes that are not multiples of 4/16/64 (hidden 40, head dim 10, intermediate 74)."""
    common = dict(vocab_size=97, max_position_embeddings=40, num_labels=3, initializer_range=0.2,
                  attn_implementation="eager")
    if family == "DistilBert":
        kw = dict(dim=40, n_layers=2, n_heads=4, hidden_dim=74, activation="gelu", dropout=0.0,
                  attention_dropout=0.0, qa_dropout=0.0, seq_classif_dropout=0.0, pad_token_id=0)
        return transformers.DistilBertConfig(**{**common, **kw, **overrides})
    kw = dict(hidden_size=40, num_hidden_layers=2, num_attention_heads=4, intermediate_size=74, hidden_act="gelu",
              hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    if family == "Roberta":
        kw.update(type_vocab_size=1, pad_token_id=1, layer_norm_eps=1e-5)
        return transformers.RobertaConfig(**{**common, **kw, **overrides})
    return transformers.BertConfig(**{**common, **kw, **overrides})


def make_family_model(family: str, head: str, seed: int = 0, sparsity: float = 0.85, block: int = 1,
                      **overrides):
    """A random eval-mode model with non-trivial biases and LayerNorms, its encoder linears magnitude-pruned."""
    if head == "ForQuestionAnswering":
        overrides.setdefault("num_labels", 2)
    config = make_family_config(family, **overrides)
    torch.manual_seed(seed)
    model = getattr(transformers, f"{family}{head}")(config)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm.weight" in name.lower() or name.endswith("LayerNorm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif p.dim() == 2 and ".layer." in name and sparsity > 0:
                prune_matrix_(p, sparsity, block)
    return model.float().eval()


def family_inputs(family: str, lengths, vocab=97, seed=0, pad_inside=False) -> dict:
    """Right-padded ids (padding = the family's pad id), mask, and token types where the family has them."""
    rng = np.random.default_rng(seed)
    seq = max(lengths)
    ids = rng.integers(2, vocab, size=(len(lengths), seq))
    mask = np.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, n:] = PAD[family]
        mask[i, :n] = 1
    if pad_inside:
        ids[0, 1] = PAD[family]  # a pad id inside a sequence: RoBERTa's positions skip it, as transformers' do
    inputs = {"input_ids": ids, "attention_mask": mask}
    if family != "DistilBert":
        inputs["token_type_ids"] = np.zeros_like(ids)
    return inputs


def torch_reference(model, inputs: dict) -> dict:
    kwargs = {k: torch.from_numpy(v.astype(np.int64)) for k, v in inputs.items()}
    with torch.no_grad():
        out = model(**kwargs, output_hidden_states=True)
    ref = {"last_hidden_state": out.hidden_states[-1].numpy()}
    for key in ("pooler_output", "logits", "start_logits", "end_logits"):
        value = getattr(out, key, None)
        if value is not None:
            ref[key] = value.numpy()
    if model.base_model is not model:  # a task model: a pooler of its encoder is an output of ours too
        with torch.no_grad():
            pooled = getattr(model.base_model(**kwargs), "pooler_output", None)
        if pooled is not None:
            ref["pooler_output"] = pooled.numpy()
    return ref


def assert_family_matches(out: dict, ref: dict, mask, what: str):
    assert set(out) == set(ref), f"{what}: outputs {sorted(out)}, expected {sorted(ref)}"
    for key, expected in ref.items():
        assert out[key].shape == expected.shape, f"{what}/{key}: {out[key].shape} != {expected.shape}"
        if expected.ndim >= 2 and expected.shape[:2] == mask.shape:  # per token: compare unpadded positions
            assert_close_unpadded(out[key], expected, mask, what=f"{what}/{key}")
        else:
            assert_close(out[key], expected, what=f"{what}/{key}")


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("family", FAMILIES)
def test_family_parity(family, head, tmp_path):
    model = make_family_model(family, head, seed=len(family) + len(head))
    inputs = family_inputs(family, [23, 9, 1], pad_inside=True)
    ref = torch_reference(model, inputs)
    path = tmp_path / "model.sbert"
    report = sparsebert.export(model, path, verbose=False)
    assert {row.layout for row in report.rows if ".layers." in f".{row.name}"} == {"unstructured"}
    for isa in AVAILABLE_ISAS:
        engine = SparseEngine.load(path, isa=isa, num_threads=2)
        assert engine.config["model_type"] == family.lower()
        assert_family_matches(engine.run(inputs), ref, inputs["attention_mask"], f"{family}{head}/{isa}")


@pytest.mark.parametrize("family", ["Roberta", "DistilBert"])
def test_family_from_safetensors_directory_block4(family, tmp_path):
    model = make_family_model(family, "ForSequenceClassification", seed=3, sparsity=0.75, block=4,
                              id2label={0: "neg", 1: "neutral", 2: "pos"})
    ckpt = tmp_path / "ckpt"
    model.save_pretrained(ckpt, safe_serialization=True)
    inputs = family_inputs(family, [17, 30], seed=4)
    ref = torch_reference(model, inputs)
    path = tmp_path / "model.sbert"
    report = sparsebert.export(ckpt, path, verbose=False)
    assert report.rows and any(row.layout == "block4" for row in report.rows)
    engine = SparseEngine.load(path)
    assert engine.config["id2label"] == {"0": "neg", "1": "neutral", "2": "pos"}
    assert_family_matches(engine.run(inputs), ref, inputs["attention_mask"], f"{family} safetensors")


@pytest.mark.parametrize("head", ["ForSequenceClassification", "ForTokenClassification", "Model"])
@pytest.mark.parametrize("family", FAMILIES)
def test_head_inferred_without_architectures(family, head, tmp_path):
    # A config.json without "architectures": the head weights must tell a sequence classifier from a token
    # classifier (both have classifier.weight) and from a bare encoder.
    import json

    model = make_family_model(family, head, seed=5, sparsity=0.0)
    ckpt = tmp_path / "ckpt"
    model.save_pretrained(ckpt, safe_serialization=True)
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg.pop("architectures", None)
    (ckpt / "config.json").write_text(json.dumps(cfg))
    path = tmp_path / "model.sbert"
    sparsebert.export(ckpt, path, verbose=False)
    engine = SparseEngine.load(path)
    expected_head = {"Model": "none", "ForSequenceClassification": "sequence_classification",
                     "ForTokenClassification": "token_classification"}[head]
    assert engine.config["head"] == expected_head
    inputs = family_inputs(family, [12, 5], seed=6)
    assert_family_matches(engine.run(inputs), torch_reference(model, inputs), inputs["attention_mask"],
                          f"{family}{head} inferred")


def test_roberta_longest_sequence(tmp_path):
    # 40 positions with pad id 1 leave 38 tokens: position ids 2..39.
    model = make_family_model("Roberta", "Model", seed=7, sparsity=0.0)
    path = tmp_path / "model.sbert"
    sparsebert.export(model, path, verbose=False)
    engine = SparseEngine.load(path)
    inputs = family_inputs("Roberta", [38], seed=8)
    assert_family_matches(engine.run(inputs), torch_reference(model, inputs), inputs["attention_mask"], "38")
    with pytest.raises(ValueError, match="longest this model accepts"):
        engine.run(family_inputs("Roberta", [39], seed=8))


def test_unsupported_family_is_refused(tmp_path):
    import json

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps({"model_type": "albert", "architectures": ["AlbertModel"]}))
    with pytest.raises(UnsupportedModelError, match="albert"):
        sparsebert.export(ckpt, tmp_path / "x.sbert", verbose=False)


def test_architecture_must_match_model_type(tmp_path):
    import json

    model = make_family_model("Roberta", "Model", seed=9, sparsity=0.0)
    ckpt = tmp_path / "ckpt"
    model.save_pretrained(ckpt, safe_serialization=True)
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["architectures"] = ["BertModel"]
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedModelError, match="does not match model_type"):
        sparsebert.export(ckpt, tmp_path / "x.sbert", verbose=False)


@pytest.mark.slow
@pytest.mark.parametrize("head", ["ForSequenceClassification", "ForQuestionAnswering", "ForTokenClassification"])
def test_real_minilm_weights_with_each_head(head, minilm_dir, minilm_batch, tmp_path):
    # The real all-MiniLM-L6-v2 encoder, 90%-pruned, under each task head (heads freshly initialised).
    from sparsebert.pruning import prune_bert_

    torch.manual_seed(0)
    model = getattr(transformers, f"Bert{head}").from_pretrained(
        str(minilm_dir), attn_implementation="eager", num_labels=2 if head == "ForQuestionAnswering" else 3)
    model = prune_bert_(model.float().eval(), 0.9)
    path = tmp_path / "m.sbert"
    sparsebert.export(model, path, verbose=False)
    inputs = {k: v for k, v in minilm_batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    assert_family_matches(SparseEngine.load(path).run(inputs), torch_reference(model, inputs),
                          inputs["attention_mask"], f"MiniLM {head}")
