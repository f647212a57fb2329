"""The rerank pipeline (cross-encoders): scores equal transformers' logits (raw) or their sigmoid on the same pairs,
tokenized as pairs and truncated longest_first; results best first, independent of the batch size; bad inputs are
TypeError / ValueError; and `sparsebert run rerank`."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import sparsebert  # noqa: E402
from sparsebert import cli  # noqa: E402

from conftest import SENTENCES, TOKENIZER_FILES, make_config, make_model  # noqa: E402

QUERY = "Where do pruned transformers run fast?"
LONG = " ".join(SENTENCES) * 3  # far more tokens than the model takes: truncated
TEXTS = [*SENTENCES[:5], LONG, "a", "Zürich's café serves crème brûlée on 3 May 2021!"]
SCORE_ATOL = 1e-5  # fp32 logits of a tiny model; sparsebert and PyTorch sum in different orders


def _save(model, directory, minilm_dir):
    model.save_pretrained(directory, safe_serialization=True)
    for name in TOKENIZER_FILES:
        if (minilm_dir / name).is_file():
            shutil.copy(minilm_dir / name, directory / name)
    return directory


def _bert(num_labels=1):
    return make_model("sequence_classification", seed=5, num_labels=num_labels, vocab_size=30522,
                      max_position_embeddings=64)


def _roberta():
    kw = make_config(vocab_size=30522, max_position_embeddings=66, type_vocab_size=1, num_labels=1).to_dict()
    config = transformers.RobertaConfig(**{**kw, "pad_token_id": 1, "model_type": "roberta"})
    torch.manual_seed(6)
    return transformers.RobertaForSequenceClassification(config).float().eval()


@pytest.fixture(scope="module", params=["bert", "roberta"])
def reranker(request, tmp_path_factory, minilm_dir):
    """(transformers model, its checkpoint directory, the packed file carrying MiniLM's tokenizer)."""
    model = _bert() if request.param == "bert" else _roberta()
    root = tmp_path_factory.mktemp(f"rerank_{request.param}")
    ckpt = _save(model, root / "ckpt", minilm_dir)
    path = root / "model.sbert"
    sparsebert.export(ckpt, path, verbose=False)
    return request.param, model, ckpt, path


def _logits(family, model, ckpt, pairs) -> np.ndarray:
    """transformers' logits, one pair at a time, tokenized as a pair and truncated longest_first to 64 tokens."""
    tok = transformers.AutoTokenizer.from_pretrained(ckpt)
    out = []
    for query, text in pairs:
        enc = tok(query, text, truncation="longest_first", max_length=64, return_tensors="pt")
        if family == "roberta":  # one token type; what RoBERTa's own tokenizer gives
            enc["token_type_ids"] = torch.zeros_like(enc["input_ids"])
        with torch.no_grad():
            out.append(model(**enc).logits[0, 0].item())
    return np.array(out)


def test_scores_are_transformers_logits_and_their_sigmoid_best_first(reranker):
    family, model, ckpt, path = reranker
    logits = _logits(family, model, ckpt, [(QUERY, t) for t in TEXTS])
    pipe = sparsebert.pipeline("rerank", path)
    ranked = pipe(TEXTS, query=QUERY)
    assert sorted(r["index"] for r in ranked) == list(range(len(TEXTS)))
    scores = [r["score"] for r in ranked]
    assert scores == sorted(scores, reverse=True)
    expected = 1 / (1 + np.exp(-logits))
    np.testing.assert_allclose(scores, expected[[r["index"] for r in ranked]], atol=SCORE_ATOL, rtol=0)
    # The order is transformers' order (its scores are far enough apart on these texts).
    assert [r["index"] for r in ranked] == list(np.argsort(-logits, kind="stable"))

    raw = pipe(TEXTS, query=QUERY, raw_scores=True, return_text=True, batch_size=3)
    np.testing.assert_allclose([r["score"] for r in raw], logits[[r["index"] for r in raw]], atol=SCORE_ATOL, rtol=0)
    assert all(r["text"] == TEXTS[r["index"]] and set(r) == {"index", "score", "text"} for r in raw)


def test_pairs_top_k_and_batch_size_invariance(reranker):
    family, model, ckpt, path = reranker
    pairs = [(SENTENCES[i], SENTENCES[-1 - i]) for i in range(5)] + [(LONG, "short"), ("short", LONG)]
    logits = _logits(family, model, ckpt, pairs)
    pipe = sparsebert.pipeline("rerank", path)
    ranked = pipe(pairs, raw_scores=True, return_text=True)
    np.testing.assert_allclose([r["score"] for r in ranked], logits[[r["index"] for r in ranked]], atol=SCORE_ATOL,
                               rtol=0)
    assert all((r["query"], r["text"]) == pairs[r["index"]] for r in ranked)
    by_one = pipe([list(p) for p in pairs], raw_scores=True, return_text=True, batch_size=1)
    assert [r["index"] for r in by_one] == [r["index"] for r in ranked]
    np.testing.assert_allclose([r["score"] for r in by_one], [r["score"] for r in ranked], atol=1e-6, rtol=0)
    assert pipe(pairs, raw_scores=True, return_text=True, top_k=2) == ranked[:2]
    assert pipe([], query=QUERY) == [] and pipe([]) == []


@pytest.mark.parametrize("call, error, fragment", [
    (lambda p: p("one text", query=QUERY), TypeError, "list of texts"),
    (lambda p: p([1, 2], query=QUERY), TypeError, "must be strings"),
    (lambda p: p(["a"], query=3), TypeError, "query must be a string"),
    (lambda p: p(["a", "b"]), TypeError, "pairs"),
    (lambda p: p([("q", "t", "u")]), TypeError, "pairs"),
    (lambda p: p([("q", 7)]), TypeError, "must be strings"),
    (lambda p: p(None), TypeError, "pairs"),
    (lambda p: p(["a"], query=QUERY, top_k=0), ValueError, "top_k"),
    (lambda p: p(["bad \udc80 bytes"], query=QUERY), ValueError, "not valid Unicode"),
    (lambda p: p(["a"], query=QUERY, batch_size=0), ValueError, "batch_size"),
])
def test_bad_inputs(reranker, call, error, fragment):
    pipe = sparsebert.pipeline("rerank", reranker[3])
    with pytest.raises(error, match=fragment):
        call(pipe)


def test_models_that_are_not_cross_encoders_are_refused(tmp_path, minilm_dir):
    for model, fragment in ((_bert(num_labels=3), "3 labels"), (make_model("base", vocab_size=30522), "head")):
        path = tmp_path / "m.sbert"
        sparsebert.export(_save(model, tmp_path / "ckpt", minilm_dir), path, verbose=False)
        with pytest.raises(ValueError, match=fragment):
            sparsebert.pipeline("rerank", path)
        shutil.rmtree(tmp_path / "ckpt")
        path.unlink()


def test_cli_run_rerank(reranker, capsys):
    _, _, _, path = reranker
    assert cli.main(["run", "rerank", str(path), "--query", QUERY, *TEXTS[:4], "--batch-size", "3"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    expected = sparsebert.pipeline("rerank", path)(TEXTS[:4], query=QUERY, return_text=True)
    assert lines == expected
    assert cli.main(["run", "rerank", str(path), "text"]) == 2
    assert "--query goes with rerank" in capsys.readouterr().err
    assert cli.main(["run", "text-classification", str(path), "text", "--query", "q"]) == 2
