"""The span search of question answering, as transformers' question-answering pipeline does it: per window, start
and end probabilities over the context tokens, the best spans no longer than ``max_answer_len``, widened to whole
words. Only numpy; the windows are ``tokenizers`` encodings."""

from __future__ import annotations

from typing import Any

import numpy as np


def window_probs(logits: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Softmax of one window's start or end logits over the wanted tokens (the others get ~0, as transformers
    masks them with -10000)."""
    masked = np.where(wanted, logits.astype(np.float64), -10000.0)
    e = np.exp(masked - masked.max())
    return e / e.sum()


def best_spans(starts: np.ndarray, ends: np.ndarray, wanted: np.ndarray, top_k: int,
               max_answer_len: int) -> list[tuple[int, int, float]]:
    """The top_k (start, end, score) with start <= end < start + max_answer_len, both wanted tokens."""
    scores = np.tril(np.triu(np.outer(starts, ends)), max_answer_len - 1)
    flat = scores.ravel()
    if top_k == 1:
        order = np.array([np.argmax(flat)])
    elif len(flat) < top_k:
        order = np.argsort(-flat)
    else:
        top = np.argpartition(-flat, top_k)[:top_k]
        order = top[np.argsort(-flat[top])]
    spans = []
    for index in order:
        s, e = np.unravel_index(index, scores.shape)
        if wanted[s] and wanted[e]:
            spans.append((int(s), int(e), float(scores[s, e])))
    return spans


def word_span(window: Any, s: int, e: int) -> tuple[int, int]:
    """Character offsets in the context of tokens s..e widened to whole words (the pipeline's align_to_words)."""
    start_word, end_word = window.token_to_word(s), window.token_to_word(e)
    if start_word is None or end_word is None:
        return window.offsets[s][0], window.offsets[e][1]
    return window.word_to_chars(start_word, 1)[0], window.word_to_chars(end_word, 1)[1]
