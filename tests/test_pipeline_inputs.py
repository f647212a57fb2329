"""Pipelines on inputs at the edges: questions too long for a window, windows too small, tokenizers' failures and
panics, text that is not valid Unicode, texts without tokens, and long texts, whose truncated encodings must equal
those of the whole text while only a bounded prefix is tokenized."""

from __future__ import annotations

import contextlib
import json
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

tokenizers = pytest.importorskip("tokenizers")
pytest.importorskip("torch")

import sparsebert  # noqa: E402
from sparsebert import text_encoding  # noqa: E402
from sparsebert.text_encoding import call_tokenizer, encode_truncated  # noqa: E402

from conftest import SENTENCES  # noqa: E402

LONG_CONTEXT = " ".join(SENTENCES * 8)
ENCODING_FIELDS = ("ids", "tokens", "offsets", "word_ids", "type_ids", "special_tokens_mask", "attention_mask",
                   "sequence_ids")


@pytest.fixture()
def qa_pipe(exported):
    _, _, path = exported("question_answering", max_position_embeddings=512)
    return sparsebert.pipeline("question-answering", path)


# ------------------------------------------------------------------------------------------- question answering

@pytest.mark.slow
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


# ------------------------------------------------------------------------------------------- long texts

PIECES = ["word", "a", "supercalifragilistic" * 3, " ", "   ", " " * 300, "\n", "\t", "\u3000", "é", "e\u0301", "中文",
          "😀", ",", "...", "ß", "ﬁ", "x" * 150, "'s", "'", "[MASK]", "[MA", "<mask>", " <mask>", "<ma", "Ǆ"]


def trained_tokenizer(kind):
    """A byte-level BPE tokenizer with RoBERTa's post-processor and a <mask> that swallows the space before it, or
    a Unigram one behind Metaspace with normalizers that look past a character (NFKC, a Replace of two spaces)."""
    from tokenizers import AddedToken, decoders, models, normalizers, pre_tokenizers, processors, trainers

    corpus = [*SENTENCES, "Zürich's café serves crème brûlée 😀 中文 ß ﬁ"] * 10
    if kind == "bytelevel":
        tok = tokenizers.Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=["<s>", "<pad>", "</s>"],
                                                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
        tok.add_special_tokens([AddedToken("<mask>", lstrip=True)])
        tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
        return tok
    tok = tokenizers.Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace("  ", " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.train_from_iterator(corpus, trainers.UnigramTrainer(vocab_size=150, special_tokens=["<cls>", "<sep>", "<unk>"],
                                                            unk_token="<unk>"))
    tok.post_processor = processors.TemplateProcessing(single="<cls> $A <sep>",
                                                       special_tokens=[("<cls>", 0), ("<sep>", 1)])
    return tok


@pytest.fixture(scope="module")
def tokenizer_pairs(minilm_dir):
    """(tokenizer under test, an identical one truncating the whole text as the reference), per kind."""
    made = {"wordpiece": tokenizers.Tokenizer.from_file(str(minilm_dir / "tokenizer.json")),
            "bytelevel": trained_tokenizer("bytelevel"), "unigram": trained_tokenizer("unigram")}
    return {kind: (tok, tokenizers.Tokenizer.from_str(tok.to_str())) for kind, tok in made.items()}


def assert_same_encoding(ours, theirs, what):
    for field in ENCODING_FIELDS:
        assert getattr(ours, field) == getattr(theirs, field), f"{what}: {field} differs"


@pytest.mark.parametrize("tight", [False, True])
@pytest.mark.parametrize("kind", ["wordpiece", "bytelevel", "unigram"])
@settings(max_examples=150, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(pieces=st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=4)), max_size=250),
       max_length=st.sampled_from([2, 3, 4, 5, 8, 16, 64]))
def test_truncated_encoding_of_a_prefix_equals_that_of_the_whole_text(tokenizer_pairs, kind, tight, pieces,
                                                                      max_length):
    # tight: prefixes start at one character per kept token, without the character margin, so that cuts land
    # right after the kept tokens and inside their words: only the rule on words keeps the result exact.
    tok, reference = tokenizer_pairs[kind]
    text = "".join(pieces)
    tighter = mock.patch.multiple(text_encoding, PREFIX_CHARS_PER_TOKEN=1, PREFIX_MARGIN_CHARS=0)
    with tighter if tight else contextlib.nullcontext():
        ours = encode_truncated(tok, [text, text[:max_length]], max_length)
    reference.no_padding()
    reference.enable_truncation(max_length)
    for encoding, whole in zip(ours, reference.encode_batch([text, text[:max_length]])):
        assert_same_encoding(encoding, whole, f"{kind}, max_length {max_length}, {text[:80]!r}")


def test_cuts_stay_away_from_added_tokens_and_normalizer_patterns(minilm_dir):
    # A cut inside "[MASK]" splits it into "[" and "ma" (two words, so the rule on words alone would keep "["), and
    # a cut inside a normalizer's pattern spanning several words changes words before the last one: the margin in
    # characters keeps the kept tokens clear of both. Leading spaces (no tokens) move the cuts across the texts.
    from tokenizers import normalizers

    tok = tokenizers.Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))
    tok.normalizer = normalizers.Sequence([normalizers.Replace("q w e r t y", "z"), tok.normalizer])
    reference = tokenizers.Tokenizer.from_str(tok.to_str())
    reference.no_padding()
    for max_length in (4, 6, 7, 9):
        reference.enable_truncation(max_length)
        for body in ("the cat sat on [MASK] " * 30, "a b q w e r t y " * 30):
            texts = [" " * spaces + body for spaces in range(0, 400, 3)]
            for text, encoding, whole in zip(texts, encode_truncated(tok, texts, max_length),
                                             reference.encode_batch(texts)):
                assert_same_encoding(encoding, whole, f"max_length {max_length}, {text!r}")


class CountingTokenizer:
    """A tokenizers.Tokenizer that counts the characters it is asked to encode."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.characters = 0

    def encode(self, text, *args, **kwargs):
        self.characters += len(text) + sum(len(a) for a in args if isinstance(a, str))
        return self.tokenizer.encode(text, *args, **kwargs)

    def encode_batch(self, texts, *args, **kwargs):
        self.characters += sum(len(t) for t in texts)
        return self.tokenizer.encode_batch(texts, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


@pytest.mark.parametrize("kind, task", [("base", "feature-extraction"), ("base", "sentence-embedding"),
                                        ("sequence_classification", "text-classification"),
                                        ("token_classification", "token-classification")])
def test_a_10mb_line_costs_what_its_kept_tokens_cost(exported, kind, task):
    _, _, path = exported(kind)
    pipe = sparsebert.pipeline(task, path)
    counting = CountingTokenizer(pipe.tokenizer)
    pipe.tokenizer = counting
    line = "The quick brown fox jumps over the lazy dog, again and again. " * 170_000  # 10.5 MB
    options = {"pooling": "mean"} if task == "sentence-embedding" else {}
    result = pipe(line, **options)
    # 64 tokens kept: the first prefix of 8 characters per token (and margins) holds them.
    assert counting.characters <= 2_000, f"{counting.characters} characters tokenized for {pipe.max_length} tokens"
    expected = pipe(line[:5_000], **options)  # the same 62 words, as the encoding test above shows in general
    if isinstance(result, np.ndarray):
        np.testing.assert_array_equal(result, expected)
    else:
        assert result == expected


def test_long_texts_of_few_tokens_are_still_exact(exported):
    # Whitespace runs and one giant word give few tokens per character: the prefix grows until it has enough
    # (or is the whole text), and the offsets are those of the whole text.
    _, _, path = exported("token_classification")
    pipe = sparsebert.pipeline("token-classification", path)
    reference = tokenizers.Tokenizer.from_str(pipe.tokenizer.to_str())
    reference.no_padding()
    reference.enable_truncation(pipe.max_length)
    texts = [" " * 20_000 + "word " * 100, "x" * 30_000 + " tail", ("\u3000\t" * 3_000 + "é") * 40]
    encodings = encode_truncated(pipe.tokenizer, texts, pipe.max_length)
    for text, ours, whole in zip(texts, encodings, reference.encode_batch(texts)):
        assert_same_encoding(ours, whole, repr(text[:20]))
    for entity in pipe(texts[0]):  # the offsets reach past the 20,000 spaces
        assert texts[0][entity["start"]:entity["end"]] == "word"
