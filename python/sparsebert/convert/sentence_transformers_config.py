"""What a sentence-transformers checkpoint directory adds to its encoder: pooling, normalisation, length.

``modules.json`` lists the modules after the transformer: a ``Pooling`` module whose ``config.json`` names the
pooling mode, optionally a ``Normalize`` module, and ``sentence_bert_config.json`` holds the longest input. The
exporter stores what sparsebert can reproduce in the encoder config (`sentence_pooling`, `sentence_normalize`,
`sentence_max_length`) for the "sentence-embedding" pipeline. Files are read as JSON only.
"""

from __future__ import annotations

import json
import os
from typing import Any

POOLING_MODES = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls"}
OTHER_POOLING_MODES = ("pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens",
                       "pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken")


def _json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError, RecursionError):  # not a sentence-transformers file sparsebert can read
        return None


def sentence_config(source: Any) -> tuple[dict[str, Any], str | None]:
    """(encoder config keys, a note when the directory's pooling cannot be reproduced) for ``source``; empty
    for anything that is not a sentence-transformers directory."""
    if not isinstance(source, (str, os.PathLike)) or not os.path.isdir(source):
        return {}, None
    modules = _json(os.path.join(source, "modules.json"))
    if not isinstance(modules, list):
        return {}, None
    types = {str(m.get("type", "")).rsplit(".", 1)[-1]: m for m in modules if isinstance(m, dict)}
    pooling = types.get("Pooling")
    if pooling is None:
        return {}, None
    pool_config = _json(os.path.join(source, str(pooling.get("path", "")), "config.json")) or {}
    modes = [mode for key, mode in POOLING_MODES.items() if pool_config.get(key)]
    others = [key for key in OTHER_POOLING_MODES if pool_config.get(key)]
    if len(modes) != 1 or others:
        return {}, (f"sentence-transformers pooling {sorted(k for k, v in pool_config.items() if v is True)} is "
                    "not supported (only mean or CLS); the sentence-embedding pipeline needs pooling=")
    keys: dict[str, Any] = {"sentence_pooling": modes[0], "sentence_normalize": "Normalize" in types}
    st_config = _json(os.path.join(source, "sentence_bert_config.json")) or {}
    length = st_config.get("max_seq_length")
    if isinstance(length, int) and not isinstance(length, bool) and length > 0:
        keys["sentence_max_length"] = length
    return keys, None
