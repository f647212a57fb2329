"""Checkpoints published with only a slow tokenizer's files (vocab.txt, no tokenizer.json; the oBERT and Prune-OFA
families) get their tokenizer converted at export, identical to what transformers' AutoTokenizer gives."""

import pytest
from conftest import checkpoint_with_tokenizer, make_model

TEXTS = ["Hello world", "Ünïcode façade, CAPITALS and a question?", "tokenization of unbelievably long-words"]


def _without_tokenizer_json(kind, tmp_path, minilm_dir):
    model, ckpt = checkpoint_with_tokenizer(kind, tmp_path, minilm_dir)
    (ckpt / "tokenizer.json").unlink()
    assert (ckpt / "vocab.txt").is_file()
    return model, ckpt


def _reference_ids(directory, texts):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    return [tok(t)["input_ids"] for t in texts]


def _pipeline_ids(path, texts):
    import sparsebert

    pipe = sparsebert.pipeline("feature-extraction", path)
    arrays = pipe.tokenize(texts)
    return [row[mask.astype(bool)].tolist() for row, mask in zip(arrays["input_ids"], arrays["attention_mask"])]


def test_a_directory_with_only_vocab_txt_keeps_its_tokenizer(tmp_path, minilm_dir):
    import sparsebert
    from sparsebert.format import read_model

    _, ckpt = _without_tokenizer_json("base", tmp_path, minilm_dir)
    path = tmp_path / "m.sbert"
    sparsebert.export(ckpt, path, verbose=False)
    assert isinstance(read_model(path).header["tokenizer"], str)
    assert _pipeline_ids(path, TEXTS) == _reference_ids(ckpt, TEXTS)


def test_tokenizer_argument_may_be_such_a_directory(tmp_path, minilm_dir):
    import shutil

    import sparsebert

    tok_dir = tmp_path / "tok"
    tok_dir.mkdir()
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        if (minilm_dir / name).is_file():
            shutil.copy(minilm_dir / name, tok_dir / name)
    model = make_model("base", seed=1, vocab_size=30522, max_position_embeddings=64)
    path = tmp_path / "obj.sbert"
    sparsebert.export(model, path, tokenizer=tok_dir, verbose=False)
    assert _pipeline_ids(path, TEXTS) == _reference_ids(tok_dir, TEXTS)


def test_a_directory_without_tokenizer_files_has_none(tmp_path, minilm_dir):
    import sparsebert
    from sparsebert.format import read_model

    _, ckpt = _without_tokenizer_json("base", tmp_path, minilm_dir)
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        (ckpt / name).unlink(missing_ok=True)
    path = tmp_path / "none.sbert"
    sparsebert.export(ckpt, path, verbose=False)
    assert read_model(path).header.get("tokenizer") is None


def test_unreadable_vocab_is_a_clear_error(tmp_path, minilm_dir):
    import sparsebert

    _, ckpt = _without_tokenizer_json("base", tmp_path, minilm_dir)
    (ckpt / "tokenizer_config.json").write_text('{"tokenizer_class": "NoSuchTokenizer"}')
    with pytest.raises(ValueError, match="could not read them"):
        sparsebert.export(ckpt, tmp_path / "bad.sbert", verbose=False)
    assert not (tmp_path / "bad.sbert").exists()
