"""Texts into ``tokenizers`` encodings for the pipelines, within the library's limits and the model's.

* Every call into ``tokenizers`` goes through ``call_tokenizer``: the library raises plain ``Exception`` for bad
  input, and its Rust panics arrive as pyo3's ``PanicException``, a ``BaseException`` that ``except Exception``
  does not catch; both become ``ValueError``.
* ``encode_truncated`` tokenizes only as much of a long text as the kept tokens need (a prefix, grown
  geometrically), and gives exactly the encoding of the whole text truncated (ids, offsets, words, special tokens;
  only ``overflowing`` differs), so a 10 MB line costs what its first tokens cost.
* ``question_windows`` checks that the question leaves room for the context in a window before asking
  ``tokenizers`` to cut the context into windows (which panics when it does not).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from .extras import require

# A prefix of a long text starts at this many characters per kept token (English averages 4-5) ...
PREFIX_CHARS_PER_TOKEN = 8
# ... and the kept tokens must end this many characters before the prefix does, beyond the longest added token,
# so that a normalizer, pre-tokenizer or added token looking past the cut cannot reach them (see _prefix_suffices).
PREFIX_MARGIN_CHARS = 64
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def tokenizers_module() -> Any:
    return require("tokenizers", "sparsebert.pipeline")


def call_tokenizer(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``function(*args, **kwargs)``, a ``tokenizers`` call, with its failures (exceptions and Rust panics)
    raised as ValueError."""
    try:
        return function(*args, **kwargs)
    except Exception as exc:
        if type(exc) is not Exception:  # tokenizers' own errors are plain Exception; others keep their type
            raise
        failure = exc
    except BaseException as exc:  # noqa: B036 (pyo3's PanicException derives from BaseException)
        if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit)):
            raise
        failure = exc
    message = " ".join(str(failure).split()) or type(failure).__name__
    raise ValueError(f"the tokenizer failed: {message}") from None


def load_tokenizer(text: str) -> Any:
    """A ``tokenizers.Tokenizer`` from the JSON text of a tokenizer.json (ValueError if the library refuses it)."""
    tokenizers = tokenizers_module()
    try:
        return call_tokenizer(tokenizers.Tokenizer.from_str, text)
    except ValueError as exc:
        reason = str(exc).removeprefix("the tokenizer failed: ")
        raise ValueError(f"not a tokenizer the tokenizers library loads: {reason}") from None


def check_texts(texts: Sequence[Any], what: str = "pipeline inputs") -> None:
    """TypeError unless every text is a string; ValueError for a string that is not valid Unicode (a lone surrogate:
    undecodable bytes smuggled in by the surrogateescape error handler), which tokenizers refuses with a TypeError."""
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{what} must be strings, got {type(text).__name__}")
        bad = _LONE_SURROGATE.search(text)
        if bad:
            where = f"text {i}" if len(texts) > 1 else "the text"
            raise ValueError(f"{where} is not valid Unicode (a lone surrogate at character {bad.start()}; "
                             "undecoded bytes?)")


def special_token_count(tokenizer: Any, pair: bool = False) -> int:
    return call_tokenizer(tokenizer.num_special_tokens_to_add, pair)


def encode_truncated(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[Any]:
    """The encodings of ``texts``, each truncated to ``max_length`` tokens with its special tokens, without
    padding, as ``tokenizer.encode_batch`` gives them with truncation at ``max_length``; a long text is tokenized
    only as far as its kept tokens need. Leaves the tokenizer truncating at ``max_length``, without padding."""
    special = special_token_count(tokenizer)
    if max_length < special:
        # tokenizers would silently not truncate at all
        raise ValueError(f"max_length {max_length} is shorter than the {special} special tokens the tokenizer adds")
    call_tokenizer(tokenizer.no_padding)
    call_tokenizer(tokenizer.enable_truncation, max_length)
    keep = max_length - special
    margin = PREFIX_MARGIN_CHARS + _longest_added_token(tokenizer)
    first_prefix = PREFIX_CHARS_PER_TOKEN * max_length + 2 * margin
    short = [i for i, text in enumerate(texts) if len(text) <= first_prefix]
    encodings: list[Any] = [None] * len(texts)
    for i, encoding in zip(short, call_tokenizer(tokenizer.encode_batch, [texts[i] for i in short])):
        encodings[i] = encoding
    for i, text in enumerate(texts):
        if encodings[i] is None:
            encodings[i] = _encode_long(tokenizer, text, keep, first_prefix, margin)
    return encodings


def _encode_long(tokenizer: Any, text: str, keep: int, size: int, margin: int) -> Any:
    while size < len(text):
        encoding = call_tokenizer(tokenizer.encode, text[:size])
        if _prefix_suffices(encoding, keep, size, margin):
            return encoding
        size *= 2
    return call_tokenizer(tokenizer.encode, text)


def _prefix_suffices(encoding: Any, keep: int, size: int, margin: int) -> bool:
    """Whether the ``keep`` tokens kept of a ``size``-character prefix are those of the whole text: the prefix has
    more tokens than that (the truncation put the rest in ``overflowing``), and the kept ones all belong to words
    before the prefix's last word (which the cut may have split; a pre-tokenizer decides a word by looking at most
    one character past it) and end ``margin`` characters before the cut (room for normalizers and added tokens
    that look further)."""
    if not encoding.overflowing:
        return False
    if keep == 0:
        return True
    last = encoding.overflowing[-1]
    last_words = [w for w in last.word_ids if w is not None]
    kept = [(w, end) for w, (_, end), special in zip(encoding.word_ids, encoding.offsets,
                                                      encoding.special_tokens_mask) if not special]
    if not last_words or len(kept) < keep or any(w is None for w, _ in kept):
        return False
    return max(w for w, _ in kept) < max(last_words) and max(end for _, end in kept) <= size - margin


def _longest_added_token(tokenizer: Any) -> int:
    added = call_tokenizer(tokenizer.get_added_tokens_decoder)
    return max((len(token.content) for token in added.values()), default=0)


def question_windows(tokenizer: Any, question: str, context: str, max_seq_len: int, doc_stride: int,
                     model_limit: int) -> list[Any]:
    """The windows of ``question`` + ``context``: the context cut into pieces overlapping by ``doc_stride``
    tokens, each after the question in a sequence of at most ``max_seq_len`` tokens. ValueError when the question
    leaves a window no more than ``doc_stride`` context tokens and the context needs more than one window
    (tokenizers panics there) or does not fit at all."""
    check_texts([question, context], "question and context")
    special = special_token_count(tokenizer, pair=True)
    call_tokenizer(tokenizer.no_padding)
    call_tokenizer(tokenizer.no_truncation)
    asked = len(call_tokenizer(tokenizer.encode, question, add_special_tokens=False).ids)
    room = max_seq_len - special - asked  # context tokens per window
    if room > doc_stride:
        call_tokenizer(tokenizer.enable_truncation, max_seq_len, stride=doc_stride, strategy="only_second")
        first = call_tokenizer(tokenizer.encode, question, context)
        return [first, *first.overflowing]
    whole = call_tokenizer(tokenizer.encode, question, context)
    if len(whole.ids) <= max_seq_len:  # one window holds everything: no cutting needed
        return [whole]
    longest = max_seq_len - special - doc_stride - 1
    if longest < 1:
        raise ValueError(f"cannot fit the question and a piece of the context in max_seq_len={max_seq_len} tokens: "
                         f"a window holds {special} special tokens, the question and more than doc_stride="
                         f"{doc_stride} context tokens (this model takes up to {model_limit})")
    raise ValueError(f"cannot fit the question ({asked} tokens) in a window: with max_seq_len={max_seq_len}, "
                     f"{special} special tokens and more than doc_stride={doc_stride} context tokens per window, a "
                     f"question can have at most {longest} tokens; shorten it, or pass a smaller doc_stride or a "
                     f"larger max_seq_len (this model takes up to {model_limit})")
