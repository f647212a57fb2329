"""Pipelines on inputs at the edges: questions too long for a window, windows too small, tokenizers' failures and
panics, text that is not valid Unicode, texts without tokens."""

from __future__ import annotations

import json

import numpy as np
import pytest

tokenizers = pytest.importorskip("tokenizers")
pytest.importorskip("torch")

import sparsebert  # noqa: E402
from sparsebert.text_encoding import call_tokenizer  # noqa: E402

from conftest import SENTENCES  # noqa: E402

LONG_CONTEXT = " ".join(SENTENCES * 8)


@pytest.fixture()
def qa_pipe(exported):
    _, _, path = exported("question_answering", max_position_embeddings=512)
    return sparsebert.pipeline("question-answering", path)


# ------------------------------------------------------------------------------------------- question answering

def test_a_question_too_long_for_a_window_is_a_value_error_naming_the_limit(qa_pipe):
    # max_seq_len 384, doc_stride 128, 3 special tokens: a window keeps more than 128 context tokens when the
    # question has at most 384 - 3 - 128 - 1 = 252 tokens ("why" is one token). Beyond, tokenizers panicked.
    for words in (250, 252):
        answer = qa_pipe(question="why " * words, context=LONG_CONTEXT)
        assert LONG_CONTEXT[answer["start"]:answer["end"]] == answer["answer"]
    for words in (253, 300, 380):
        with pytest.raises(ValueError, match=rf"question \({words} tokens\).*at most 252 tokens"):
            qa_pipe(question="why " * words, context=LONG_CONTEXT)
    # A smaller stride, or a context that fits in one window, takes the same question.
    assert qa_pipe(question="why " * 300, context=LONG_CONTEXT, doc_stride=32)["answer"]
    assert qa_pipe(question="why " * 300, context="The treaty was signed in Geneva.")["answer"]


@pytest.mark.parametrize("max_seq_len", [1, 3, 4])
def test_windows_too_small_for_the_special_tokens_are_a_value_error(qa_pipe, max_seq_len):
    # tokenizers used to switch truncation off here, and the engine then refused a sequence of 1000+ tokens.
    with pytest.raises(ValueError, match=rf"max_seq_len={max_seq_len}"):
        qa_pipe(question="Where?", context=LONG_CONTEXT, max_seq_len=max_seq_len)


def test_tokenize_refuses_a_max_length_shorter_than_the_special_tokens(exported):
    _, _, path = exported("base")
    pipe = sparsebert.pipeline("feature-extraction", path)
    with pytest.raises(ValueError, match="2 special tokens"):
        pipe.tokenize("a few words here", max_length=1)
    assert pipe.tokenize("a few words here", max_length=2)["input_ids"].tolist() == [[101, 102]]


def test_tokenizer_panics_and_errors_become_value_errors(minilm_dir):
    tok = tokenizers.Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(384, stride=128, strategy="only_second")
    panic = None
    try:
        tok.encode("why " * 300, LONG_CONTEXT)
    except BaseException as exc:  # noqa: B036 (what the pipelines used to let through)
        panic = exc
    assert panic is not None and not isinstance(panic, Exception), "tokenizers no longer panics here"
    with pytest.raises(ValueError, match="the tokenizer failed: .*stride"):
        call_tokenizer(tok.encode, "why " * 300, LONG_CONTEXT)

    def fails(kind):
        def call():
            raise kind("boom")
        return call

    with pytest.raises(ValueError, match="the tokenizer failed: boom"):
        call_tokenizer(fails(Exception))  # tokenizers' own errors are plain Exception
    for passes in (KeyboardInterrupt, SystemExit, MemoryError, RuntimeError):  # not the tokenizer's failures
        with pytest.raises(passes):
            call_tokenizer(fails(passes))


def test_text_that_is_not_valid_unicode_is_a_value_error(exported):
    _, _, path = exported("base")
    pipe = sparsebert.pipeline("feature-extraction", path)
    undecoded = b"caf\xe9".decode("utf-8", "surrogateescape")  # what argv and stdin hold for non-UTF-8 bytes
    with pytest.raises(ValueError, match="text 1 is not valid Unicode.*character 3"):
        pipe(["fine", undecoded])
    with pytest.raises(ValueError, match="not valid Unicode"):
        pipe.tokenize(undecoded)


# ------------------------------------------------------------------------------------------- texts without tokens

def without_special_tokens(minilm_dir):
    spec = json.loads((minilm_dir / "tokenizer.json").read_text(encoding="utf-8"))
    spec["post_processor"] = None
    return tokenizers.Tokenizer.from_str(json.dumps(spec))


def test_empty_texts_pool_to_zeros_with_a_tokenizer_adding_no_special_tokens(exported, minilm_dir):
    _, _, path = exported("base")
    tokenizer = without_special_tokens(minilm_dir)
    pipe = sparsebert.pipeline("feature-extraction", path, tokenizer=tokenizer)
    texts = ["", "hello there", "   "]
    for pooling in ("mean", "cls"):
        for normalize in (False, True):
            batch = pipe(texts, pooling=pooling, normalize=normalize)  # numpy warnings are errors here
            for i, vector in enumerate(batch):
                assert vector.shape == (40,) and np.isfinite(vector).all()
                alone = pipe(texts[i], pooling=pooling, normalize=normalize)  # once a ValueError
                np.testing.assert_allclose(vector, alone, atol=1e-6)
            assert not batch[0].any() and not batch[2].any() and batch[1].any()
    features = pipe(texts)
    assert [f.shape for f in features] == [(0, 40), (2, 40), (0, 40)]
    sentences = sparsebert.pipeline("sentence-embedding", path, tokenizer=tokenizer)
    empty, hello = sentences(["", "hello there"], pooling="mean", normalize=True)
    assert not empty.any() and abs(np.linalg.norm(hello) - 1) < 1e-6
    assert not sentences(" ", pooling="mean").any()


def test_texts_without_tokens_in_the_other_tasks(exported, minilm_dir):
    _, _, tagger = exported("token_classification")
    assert sparsebert.pipeline("token-classification", tagger, tokenizer=without_special_tokens(minilm_dir))("") == []
    _, _, classifier = exported("sequence_classification")
    pipe = sparsebert.pipeline("text-classification", classifier, tokenizer=without_special_tokens(minilm_dir))
    with pytest.raises(ValueError, match="text 3 has no tokens"):
        pipe(["hello", "a", "b", ""], batch_size=2)  # its logits would be computed from padding alone
    assert pipe("hello")["label"]
