"""A request's inputs into the model's sequences, within the limits: how many inputs a request may carry, texts too
long for the model (refused, or truncated when the request says so), token arrays checked against the vocabulary
and the length. Tokenizing runs on the model's tokenizer thread (``ServedModel.on_tokenizer_thread``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from ..rerank import encode_pairs
from ..text_encoding import check_texts
from .errors import EMPTY, TOKENIZER, VALIDATION, ServeError
from .registry import ServedModel
from .settings import ServeSettings


@dataclasses.dataclass
class TokenIds:
    """A sequence given as token ids (OpenAI's token-array input): run as given, special tokens included."""

    ids: list[int]
    type_ids: list[int]


def check_count(count: int, settings: ServeSettings, field: str) -> None:
    """413 for more inputs than ``max_inputs_per_request`` (as TEI's client batch limit), 400 for none."""
    if count == 0:
        raise ServeError(400, f"{field} is empty: send at least one input", EMPTY, param=field)
    if count > settings.max_inputs_per_request:
        raise ServeError(413, f"{field} has {count} inputs, more than the {settings.max_inputs_per_request} a "
                              "request may carry (--max-inputs-per-request)", VALIDATION, param=field)


async def compute_texts(model: ServedModel, texts: Sequence[str], settings: ServeSettings, truncate: bool,
                        field: str, too_long_status: int = 413) -> tuple[list[Any], dict[str, Any]]:
    """A request's texts within the count limit, tokenized (encode_texts) and run through the model's batcher:
    (their encodings, the engine's outputs for them)."""
    check_count(len(texts), settings, field)
    return await model.compute(encode_texts, model, texts, truncate, field, too_long_status)


def _tokenizer_failure(exc: ValueError, field: str) -> ServeError:
    return ServeError(422, f"{field}: {exc}", TOKENIZER, param=field)


def encode_texts(model: ServedModel, texts: Sequence[str], truncate: bool, field: str,
                 too_long_status: int = 413) -> list[Any]:
    """The encodings of ``texts``: truncated to the model's maximum when ``truncate``, else an error
    (``too_long_status``) naming the first text that is longer. Call on the tokenizer thread."""
    try:
        check_texts(texts, field)
        encodings = model.pipeline.encode(list(texts))
    except ValueError as exc:
        raise _tokenizer_failure(exc, field) from None
    if not truncate:
        _refuse_long(encodings, model, field, too_long_status)
    return encodings


def encode_text_pairs(model: ServedModel, pairs: Sequence[tuple[str, str]], truncate: bool,
                      field: str) -> list[Any]:
    """The encodings of (first, second) text pairs, truncated longest-first as the rerank pipeline truncates, or a
    413 for a pair that is too long unless ``truncate``. Call on the tokenizer thread."""
    try:
        check_texts([part for pair in pairs for part in pair], field)
        encodings = encode_pairs(model.pipeline.tokenizer, list(pairs), model.max_input_length)
    except ValueError as exc:
        raise _tokenizer_failure(exc, field) from None
    if not truncate:
        _refuse_long(encodings, model, field, 413)
    return encodings


def _refuse_long(encodings: list[Any], model: ServedModel, field: str, status: int) -> None:
    for i, encoding in enumerate(encodings):
        if encoding.overflowing:
            which = f"{field}[{i}]" if len(encodings) > 1 else field
            raise ServeError(status, f"{which} is longer than the {model.max_input_length} tokens the model "
                                     f"{model.name!r} takes; shorten it, or send truncate=true", VALIDATION,
                             param=field)


def token_arrays(model: ServedModel, arrays: Sequence[Sequence[int]], field: str) -> list[TokenIds]:
    """Token-id sequences checked against the model's vocabulary and its maximum length (400 otherwise, as
    OpenAI answers a bad input)."""
    vocab = model.config["vocab_size"]
    sequences = []
    for i, ids in enumerate(arrays):
        where = f"{field}[{i}]" if len(arrays) > 1 else field
        if not ids:
            raise ServeError(400, f"{where} is an empty token array", EMPTY, param=field)
        if len(ids) > model.max_input_length:
            raise ServeError(400, f"{where} has {len(ids)} tokens, more than the {model.max_input_length} the "
                                  f"model {model.name!r} takes", VALIDATION, param=field)
        bad = next((t for t in ids if not 0 <= t < vocab), None)
        if bad is not None:
            raise ServeError(400, f"{where} holds the token id {bad}, outside the model's vocabulary [0, {vocab})",
                             VALIDATION, param=field)
        sequences.append(TokenIds(list(ids), [0] * len(ids)))
    return sequences


__all__ = ["TokenIds", "check_count", "compute_texts", "encode_text_pairs", "encode_texts", "token_arrays"]
