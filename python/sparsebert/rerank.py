"""Cross-encoder reranking, the ``rerank`` pipeline task: (query, text) pairs in, scores out, best first.

A reranker is a sequence classifier with one logit (``...ForSequenceClassification`` with ``num_labels=1``)
that reads a query and a text together as one pair (BERT's two segments, ``token_type_ids`` 0 then 1). The
results follow sentence-transformers' ``CrossEncoder.rank`` and text-embeddings-inference's ``/rerank``: a list
of ``{"index", "score"}`` sorted by score, best first (ties keep the input order), the score being the sigmoid
of the logit (both libraries' default for one label), or the logit itself with ``raw_scores=True`` (TEI's
option); ``return_text=True`` adds the text, ``top_k`` keeps the best k. A pair longer than the model takes is
truncated as both libraries truncate it: ``longest_first``, a token at a time from whichever side is longer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .text_encoding import call_tokenizer, check_texts, special_token_count


def check_rerank_model(config: dict[str, Any], where: Any) -> None:
    """ValueError unless the model's head gives one score per pair."""
    if config["head"] != "sequence_classification" or config["num_labels"] != 1:
        labels = f"{config['num_labels']} labels" if config["head"] == "sequence_classification" else \
            f"head {config['head']!r}"
        raise ValueError(f"task 'rerank' needs a sequence classifier with one label (a cross-encoder); {where} has "
                         f"{labels}")


def _pairs(inputs: Any, query: Any) -> list[tuple[str, str]]:
    """The (query, text) pairs of ``pipe(texts, query=q)`` or ``pipe([(q, t), ...])``."""
    if isinstance(inputs, (str, bytes)) or not isinstance(inputs, Sequence):
        what = "texts" if query is not None else "(query, text) pairs"
        raise TypeError(f"rerank takes a list of {what}, got {type(inputs).__name__}")
    if query is not None:
        if not isinstance(query, str):
            raise TypeError(f"rerank's query must be a string, got {type(query).__name__}")
        texts = list(inputs)
        check_texts([query, *texts], "rerank's query and texts")
        return [(query, text) for text in texts]
    pairs = []
    for item in inputs:
        if isinstance(item, str) or not isinstance(item, Sequence) or len(item) != 2:
            raise TypeError("rerank takes texts with query=..., or (query, text) pairs; got an item of type "
                            f"{type(item).__name__}")
        pairs.append((item[0], item[1]))
    check_texts([part for pair in pairs for part in pair], "rerank's queries and texts")
    return pairs


def encode_pairs(tokenizer: Any, pairs: list[tuple[str, str]], max_length: int) -> list[Any]:
    """The encodings of ``pairs``, each truncated ``longest_first`` to ``max_length`` tokens with its special
    tokens, without padding."""
    special = special_token_count(tokenizer, pair=True)
    if max_length <= special:
        raise ValueError(f"max_length {max_length} leaves no room beside the {special} special tokens of a pair")
    call_tokenizer(tokenizer.no_padding)
    call_tokenizer(tokenizer.enable_truncation, max_length, strategy="longest_first")
    return call_tokenizer(tokenizer.encode_batch, pairs)


def rerank(engine: Any, tokenizer: Any, max_length: int, to_arrays: Callable[[list[Any]], dict[str, np.ndarray]],
           inputs: Any, batch_size: int, query: str | None = None, raw_scores: bool = False,
           return_text: bool = False, top_k: int | None = None) -> list[dict[str, Any]]:
    """Score each (query, text) pair with ``engine`` (``to_arrays``: encodings -> its inputs) and rank them.

    ``inputs``: a list of texts with ``query=``, or of (query, text) pairs. Returns ``[{"index", "score"}, ...]``,
    best first; ``return_text`` adds "text" (and, for pairs, "query")."""
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be None or a positive integer, got {top_k!r}")
    pairs = _pairs(inputs, query)
    logits = [np.zeros(0)]
    for start in range(0, len(pairs), batch_size):
        encodings = encode_pairs(tokenizer, pairs[start:start + batch_size], max_length)
        logits.append(engine.run(to_arrays(encodings))["logits"][:, 0].astype(np.float64))
    return rank(pairs, np.concatenate(logits), query is not None, raw_scores, return_text, top_k)


def rank(pairs: list[tuple[str, str]], logits: np.ndarray, one_query: bool, raw_scores: bool = False,
         return_text: bool = False, top_k: int | None = None) -> list[dict[str, Any]]:
    """``rerank``'s answer from the pairs' logits: ``[{"index", "score"}, ...]`` best first (the sigmoid of the
    logit, or the logit with ``raw_scores``); ``return_text`` adds the text, and the query unless ``one_query``."""
    scores = np.asarray(logits, dtype=np.float64)
    if not raw_scores:
        scores = 1.0 / (1.0 + np.exp(-scores))
    ranked = []
    for i in np.argsort(-scores, kind="stable")[:top_k]:
        entry: dict[str, Any] = {"index": int(i), "score": float(scores[i])}
        if return_text:
            entry.update({"text": pairs[i][1]} if one_query else {"query": pairs[i][0], "text": pairs[i][1]})
        ranked.append(entry)
    return ranked


__all__ = ["check_rerank_model", "encode_pairs", "rank", "rerank"]
