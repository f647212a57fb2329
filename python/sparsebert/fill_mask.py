"""The ``fill-mask`` task of ``sparsebert.pipeline``: the best tokens for each mask token of a text, from a model
exported with its masked-LM head, as the ``transformers`` fill-mask pipeline gives them.

The logits are computed only at the mask tokens (``SparseEngine.run(..., logits_at=...)``): the decoder to the
vocabulary would cost more than the whole encoder at every token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .text_encoding import call_tokenizer

DEFAULT_TOP_K = 5


def special_token(tokenizer: Any, role: str) -> tuple[str, int] | None:
    """The special token playing ``role`` ("mask", "pad") in a ``tokenizers.Tokenizer``, as (text, id): the added
    special token whose text without its brackets is the role ([MASK], <mask>); None when there is none."""
    for token_id, token in sorted(call_tokenizer(tokenizer.get_added_tokens_decoder).items()):
        if token.special and token.content.strip("[]<>").lower() == role:
            return token.content, int(token_id)
    return None


def target_ids(tokenizer: Any, targets: str | Sequence[str]) -> list[int]:
    """The ids ``targets`` name, as transformers finds them: a token of the vocabulary, else the first token of
    the target's encoding (a target without tokens is skipped); ValueError when none is left."""
    if isinstance(targets, str):
        targets = [targets]
    if not isinstance(targets, Sequence) or not all(isinstance(t, str) for t in targets):
        raise ValueError(f"targets must be a string or a list of strings, got {targets!r}")
    vocab = call_tokenizer(tokenizer.get_vocab, with_added_tokens=True)
    ids = []
    for target in targets:
        if target in vocab:
            ids.append(vocab[target])
            continue
        encoded = call_tokenizer(tokenizer.encode, target, add_special_tokens=False).ids
        if encoded:
            ids.append(encoded[0])
    if not ids:
        raise ValueError("targets: none of them is a token of this model's vocabulary or tokenizes to one")
    return list(set(ids))  # transformers' order, so that equal scores rank alike


def fill_masks(engine: Any, tokenizer: Any, encodings: list[Any], inputs: dict[str, np.ndarray], first: int,
               top_k: int = DEFAULT_TOP_K, targets: str | Sequence[str] | None = None) -> list[Any]:
    """Per text, the ``top_k`` best {"score", "token", "token_str", "sequence"} for its mask token (softmax over
    the vocabulary, or over ``targets`` only), best first; for a text with several masks, one such list per mask.
    ``sequence`` is the text decoded with the token in place of the mask (special tokens left out when the text
    has one mask, as transformers does). ``first``: the index of the first text, for messages."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
    mask = special_token(tokenizer, "mask")
    if mask is None:
        raise ValueError("fill-mask needs a tokenizer with a mask token ([MASK] or <mask>); this one has none")
    mask_text, mask_id = mask
    pad = special_token(tokenizer, "pad")
    chosen = None if targets is None else np.array(target_ids(tokenizer, targets))
    pairs = []
    for i, e in enumerate(encodings):
        positions = [p for p, token in enumerate(e.ids) if token == mask_id]
        if not positions:
            raise ValueError(f"text {first + i} holds no mask token {mask_text} (within the tokens the model takes)")
        pairs += [(i, p) for p in positions]
    logits = engine.run(inputs, logits_at=np.array(pairs, dtype=np.int32))["logits"].astype(np.float64)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    if chosen is not None:
        probs = probs[:, chosen]
    results: list[Any] = [[] for _ in encodings]
    for (i, position), row in zip(pairs, probs):
        ids = np.array(encodings[i].ids)
        single = int((ids == mask_id).sum()) == 1
        best = []
        for j in np.argsort(-row, kind="stable")[:top_k]:
            token = int(j if chosen is None else chosen[j])
            filled = ids.copy()
            filled[position] = token
            if pad is not None:
                filled = filled[filled != pad[1]]
            sequence = call_tokenizer(tokenizer.decode, filled.tolist(), skip_special_tokens=single)
            best.append({"score": float(row[j]), "token": token,
                         "token_str": call_tokenizer(tokenizer.decode, [token], skip_special_tokens=False),
                         "sequence": sequence})
        results[i].append(best)
    return [per_text[0] if len(per_text) == 1 else per_text for per_text in results]
