"""Masked-LM checkpoints (BertForMaskedLM, BertForPreTraining, RobertaForMaskedLM, DistilBertForMaskedLM) against
transformers: the default export is the bare encoder, head="masked_lm" keeps the head (logits at every token and
at chosen positions, dense and pruned, chunked, tied and untied decoders), and the fill-mask pipeline against
transformers' own."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import sparsebert  # noqa: E402
from sparsebert import SparseEngine  # noqa: E402
from sparsebert.format import read_model  # noqa: E402

from conftest import TOKENIZER_FILES, assert_close, assert_close_unpadded  # noqa: E402
from test_cli import assert_one_line_error, run_cli  # noqa: E402
from test_families import family_inputs, make_family_model  # noqa: E402

ARCHITECTURES = {"BertForMaskedLM": "Bert", "BertForPreTraining": "Bert", "RobertaForMaskedLM": "Roberta",
                 "DistilBertForMaskedLM": "DistilBert"}


def make_mlm(architecture: str, seed: int = 0, sparsity: float = 0.0, **overrides):
    family = ARCHITECTURES[architecture]
    return make_family_model(family, architecture[len(family):], seed=seed, sparsity=sparsity, **overrides)


def reference_logits(model, inputs) -> np.ndarray:
    kwargs = {k: torch.from_numpy(v.astype(np.int64)) for k, v in inputs.items()}
    with torch.no_grad():
        out = model(**kwargs)
    return (out.prediction_logits if hasattr(out, "prediction_logits") else out.logits).numpy()


def base_outputs(model, inputs) -> dict:
    kwargs = {k: torch.from_numpy(v.astype(np.int64)) for k, v in inputs.items()}
    with torch.no_grad():
        out = model.base_model(**kwargs)
    ref = {"last_hidden_state": out.last_hidden_state.numpy()}
    if getattr(out, "pooler_output", None) is not None:
        ref["pooler_output"] = out.pooler_output.numpy()
    return ref


def source_of(model, kind: str, tmp_path):
    if kind == "object":
        return model
    model.save_pretrained(tmp_path / "ckpt", safe_serialization=True)
    return tmp_path / "ckpt"


@pytest.mark.parametrize("source", ["object", "directory"])
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_default_export_is_the_bare_encoder(architecture, source, tmp_path):
    model = make_mlm(architecture, seed=1, sparsity=0.85)
    family = ARCHITECTURES[architecture]
    inputs = family_inputs(family, [11, 4], pad_inside=True)
    path = tmp_path / "model.sbert"
    report = sparsebert.export(source_of(model, source, tmp_path), path, verbose=False)
    assert "not exported: the masked-LM head" in report.notes
    assert ("next-sentence head" in report.notes) == (architecture == "BertForPreTraining")
    engine = SparseEngine.load(path, num_threads=2)
    assert engine.config["head"] == "none"
    out = engine.run(inputs)
    ref = base_outputs(model, inputs)
    # BertForPreTraining keeps its pooler (as BertModel), BertForMaskedLM has none.
    assert set(out) == set(ref)
    assert_close_unpadded(out["last_hidden_state"], ref["last_hidden_state"], inputs["attention_mask"])
    if "pooler_output" in ref:
        assert_close(out["pooler_output"], ref["pooler_output"])


@pytest.mark.parametrize("sparsity", [0.0, 0.85])
@pytest.mark.parametrize("source", ["object", "directory"])
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_masked_lm_logits_match_transformers(architecture, source, sparsity, tmp_path):
    model = make_mlm(architecture, seed=2, sparsity=sparsity)
    family = ARCHITECTURES[architecture]
    inputs = family_inputs(family, [23, 9, 1], pad_inside=True)
    ref = reference_logits(model, inputs)
    path = tmp_path / "model.sbert"
    report = sparsebert.export(source_of(model, source, tmp_path), path, head="masked_lm", verbose=False)
    assert ("next-sentence head" in (report.notes or "")) == (architecture == "BertForPreTraining")
    header = read_model(path).header
    assert header["config"]["mlm_decoder"] == "tied"
    # The tied decoder is stored once: the word embeddings are the only [vocab, hidden] table in the file.
    vocab_tables = [n for n, e in header["tensors"].items() if e["shape"] == [97, 40]]
    assert vocab_tables == ["embeddings.word_embeddings"]
    engine = SparseEngine.load(path, num_threads=2)
    assert engine.output_names == ["last_hidden_state", "logits"]
    out = engine.run(inputs)
    assert out["logits"].shape == ref.shape
    assert_close_unpadded(out["logits"], ref, inputs["attention_mask"], what=architecture)
    pairs = np.array([[1, 8], [0, 0], [2, 0], [0, 22], [1, 8], [0, 5]])
    chosen = engine.run(inputs, logits_at=pairs)["logits"]
    assert chosen.shape == (len(pairs), 97)
    assert_close(chosen, ref[pairs[:, 0], pairs[:, 1]], what=f"{architecture} at chosen positions")
    # The same sums whichever tokens are chosen: bitwise the rows of the full logits.
    np.testing.assert_array_equal(chosen, out["logits"][pairs[:, 0], pairs[:, 1]])


def test_chunked_runs_give_the_same_logits(tmp_path):
    model = make_mlm("BertForMaskedLM", seed=3, sparsity=0.5)
    inputs = family_inputs("Bert", [30, 7, 19, 30, 2], seed=4)
    path = tmp_path / "model.sbert"
    sparsebert.export(model, path, head="masked_lm", verbose=False)
    whole = SparseEngine.load(path, num_threads=2)
    chunked = SparseEngine.load(path, num_threads=2, max_batch_tokens=40)  # one sequence of 30 per chunk
    pairs = np.array([[4, 1], [0, 29], [2, 3], [4, 0], [1, 6], [3, 17]])  # out of sequence order
    for at in (None, pairs):
        np.testing.assert_array_equal(chunked.run(inputs, logits_at=at)["logits"],
                                      whole.run(inputs, logits_at=at)["logits"])
    assert_close_unpadded(whole.run(inputs)["logits"], reference_logits(model, inputs), inputs["attention_mask"])
    # More tokens than a tile of logits, so the decoder runs tile after tile.
    many = np.stack(np.nonzero(np.ones((5, 30), bool)), axis=1)[::-1]
    np.testing.assert_array_equal(whole.run(inputs, logits_at=many)["logits"],
                                  whole.run(inputs)["logits"][many[:, 0], many[:, 1]])


def test_untied_decoder_is_stored_when_it_differs(tmp_path):
    model = make_mlm("BertForMaskedLM", seed=4, tie_word_embeddings=False)
    with torch.no_grad():
        model.cls.predictions.decoder.weight.add_(0.3 * torch.randn(model.cls.predictions.decoder.weight.shape))
    inputs = family_inputs("Bert", [10, 6], seed=7)
    path = tmp_path / "untied.sbert"
    sparsebert.export(model, path, head="masked_lm", verbose=False)
    engine = SparseEngine.load(path)
    assert engine.config["mlm_decoder"] == "separate"
    assert any(row["name"] == "mlm.decoder" for row in engine.linears)
    assert_close_unpadded(engine.run(inputs)["logits"], reference_logits(model, inputs), inputs["attention_mask"])
    assert_close(engine.run(inputs, logits_at=[[1, 5]])["logits"], reference_logits(model, inputs)[1, 5][None])

    # Untied but equal to the word embeddings: stored once all the same.
    equal = make_mlm("BertForMaskedLM", seed=4, tie_word_embeddings=False)
    with torch.no_grad():
        equal.cls.predictions.decoder.weight.copy_(equal.bert.embeddings.word_embeddings.weight)
    sparsebert.export(equal, path, head="masked_lm", verbose=False)
    assert SparseEngine.load(path).config["mlm_decoder"] == "tied"


def test_int8_keeps_the_head_in_fp32(tmp_path):
    model = make_mlm("BertForMaskedLM", seed=5, sparsity=0.75)
    path = tmp_path / "int8.sbert"
    report = sparsebert.export(model, path, head="masked_lm", quantize="int8", verbose=False)
    layouts = {row.name: row.layout for row in report.rows}
    assert layouts["mlm.transform"] == "dense"
    assert all(layout == "block4_int8" for name, layout in layouts.items() if name.startswith("layers."))
    inputs = family_inputs("Bert", [12, 8], seed=8)
    logits = SparseEngine.load(path).run(inputs)["logits"]
    ref = reference_logits(model, inputs)
    mask = inputs["attention_mask"].astype(bool)
    # int8 activations: the best token agrees with fp32 at almost every position.
    assert (logits.argmax(-1) == ref.argmax(-1))[mask].mean() >= 0.9


def test_architecture_inferred_without_architectures(tmp_path):
    for architecture in ARCHITECTURES:
        model = make_mlm(architecture, seed=6)
        ckpt = tmp_path / architecture
        model.save_pretrained(ckpt, safe_serialization=True)
        cfg = json.loads((ckpt / "config.json").read_text())
        cfg.pop("architectures", None)
        (ckpt / "config.json").write_text(json.dumps(cfg))
        path = tmp_path / f"{architecture}.sbert"
        sparsebert.export(ckpt, path, head="masked_lm", verbose=False)
        assert read_model(path).producer["architecture"] == architecture


def test_bad_heads_and_positions_are_refused(tmp_path):
    model = make_mlm("BertForMaskedLM", seed=7)
    path = tmp_path / "model.sbert"
    with pytest.raises(ValueError, match="head must be None, 'none' or 'masked_lm'"):
        sparsebert.export(model, path, head="lm", verbose=False)
    base = make_family_model("Bert", "ForSequenceClassification", sparsity=0.0)
    with pytest.raises(ValueError, match="needs a masked-LM checkpoint"):
        sparsebert.export(base, path, head="masked_lm", verbose=False)
    sparsebert.export(base, path, head="none", verbose=False)
    with pytest.raises(ValueError, match="logits_at is for a model with a masked_lm head"):
        SparseEngine.load(path).run({"input_ids": [[2, 3]]}, logits_at=[[0, 0]])

    sparsebert.export(model, path, head="masked_lm", verbose=False)
    engine = SparseEngine.load(path)
    inputs = {"input_ids": np.full((2, 3), 5)}
    assert engine.run(inputs, logits_at=np.zeros((0, 2), np.int64))["logits"].shape == (0, 97)
    for bad, message in (([[2, 0]], r"pair 0 is \(2, 0\), outside batch \[0, 2\) x position \[0, 3\)"),
                         ([[0, 0], [1, -1]], r"pair 1 is \(1, -1\)"),
                         ([[0, 0, 0]], r"shape \[pairs, 2\]"),
                         ([0, 1], r"shape \[pairs, 2\]"),
                         ([[0.0, 1.0]], "integer"),
                         ([[0, 2**40]], "int32"),
                         ([[0, 0]] * 7, "at most one per token")):
        with pytest.raises(ValueError, match=message):
            engine.run(inputs, logits_at=bad)


# ------------------------------------------------------------------------------------------- fill-mask


@pytest.fixture(scope="module")
def fill_mask_models(tmp_path_factory, minilm_dir):
    """A random BertForMaskedLM over MiniLM's vocabulary with its tokenizer files, exported with its head."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tmp = tmp_path_factory.mktemp("fill_mask")
    model = make_mlm("BertForMaskedLM", seed=8, vocab_size=30522, max_position_embeddings=64)
    ckpt = tmp / "ckpt"
    model.save_pretrained(ckpt, safe_serialization=True)
    for name in TOKENIZER_FILES:
        if (minilm_dir / name).is_file():
            shutil.copy(minilm_dir / name, ckpt / name)
    path = tmp / "mlm.sbert"
    sparsebert.export(ckpt, path, head="masked_lm", verbose=False)
    reference = transformers.pipeline("fill-mask", model=model,
                                      tokenizer=transformers.AutoTokenizer.from_pretrained(str(ckpt)))
    return reference, sparsebert.pipeline("fill-mask", path), ckpt, path


def assert_same_predictions(ours, theirs):
    if isinstance(theirs, dict):
        assert set(ours) == set(theirs)
        assert (ours["token"], ours["token_str"], ours["sequence"]) == (
            theirs["token"], theirs["token_str"], theirs["sequence"])
        assert ours["score"] == pytest.approx(theirs["score"], abs=1e-5)
        return
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert_same_predictions(a, b)


TEXTS = ["Paris is the [MASK] of France.", "The [MASK] sat on the mat, and [MASK] was happy.",
         "[MASK]", "A much longer sentence, with punctuation; it has a [MASK] in the middle of it all!"]


def test_fill_mask_matches_transformers(fill_mask_models):
    reference, ours, _, _ = fill_mask_models
    for text in TEXTS:
        assert_same_predictions(ours(text), reference(text))
    assert_same_predictions(ours(TEXTS[0], top_k=12), reference(TEXTS[0], top_k=12))
    targets = ["capital", "city", "france", "zzzqx"]  # the last is not a token: its first token stands in
    assert_same_predictions(ours(TEXTS[0], targets=targets), reference(TEXTS[0], targets=targets))
    assert_same_predictions(ours(TEXTS[1], targets="city", top_k=3), reference(TEXTS[1], targets="city", top_k=3))
    # A list of texts: one result per text, whatever the batch size.
    for batch_size in (1, 3):
        assert_same_predictions(ours(TEXTS, batch_size=batch_size), reference(TEXTS))


def test_fill_mask_input_errors(fill_mask_models, tmp_path):
    _, ours, _, _ = fill_mask_models
    with pytest.raises(ValueError, match=r"text 1 holds no mask token \[MASK\]"):
        ours(["a [MASK].", "no mask here"])
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        ours(TEXTS[0], top_k=0)
    with pytest.raises(ValueError, match="targets"):
        ours(TEXTS[0], targets=[3])
    path = tmp_path / "encoder.sbert"
    sparsebert.export(make_mlm("BertForMaskedLM", seed=9), path, verbose=False)
    with pytest.raises(ValueError, match="needs a model with a masked_lm head"):
        sparsebert.pipeline("fill-mask", path, tokenizer=fill_mask_models[2])


def test_fill_mask_command_line(fill_mask_models, tmp_path):
    reference, _, ckpt, _ = fill_mask_models
    out = tmp_path / "cli.sbert"
    assert run_cli("export", str(ckpt), str(out), "--head", "masked_lm").returncode == 0
    proc = run_cli("run", "fill-mask", str(out), TEXTS[0], "--top-k", "2")
    assert proc.returncode == 0, proc.stderr
    line = json.loads(proc.stdout)
    assert_same_predictions(line["result"], reference(TEXTS[0], top_k=2))
    assert_one_line_error(run_cli("run", "fill-mask", str(out), "no mask"), "holds no mask token [MASK]")
    assert_one_line_error(run_cli("run", "text-classification", str(out), "x", "--top-k", "2"),
                          "--top-k goes with fill-mask")


def test_unsupported_head_value_from_the_command_line(tmp_path):
    assert_one_line_error(run_cli("export", str(tmp_path), str(tmp_path / "x.sbert"), "--head", "lm"), "--head")
