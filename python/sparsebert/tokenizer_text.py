"""A tokenizer as the JSON text of its ``tokenizer.json``: what the exporter stores in a packed file and
``sparsebert.pipeline`` loads with the ``tokenizers`` library. Importing this needs neither tokenizers nor the
compiled extension."""

from __future__ import annotations

import json
import os
from typing import Any

TOKENIZER_FILE = "tokenizer.json"


def tokenizer_json(source: Any) -> str:
    """The JSON text of a tokenizer given as a tokenizer.json path, a directory holding one, a
    ``tokenizers.Tokenizer`` or a ``transformers`` fast tokenizer; ValueError naming the file when it is not a
    JSON object (whether ``tokenizers`` can load it is for ``text_encoding.load_tokenizer`` to say)."""
    where = "the tokenizer"
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if os.path.isdir(path):
            path = os.path.join(path, TOKENIZER_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no tokenizer file at {path}")
        where = path
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path} is not a tokenizer.json: not UTF-8 text ({exc.reason} at byte {exc.start})") \
                from None
    elif hasattr(source, "backend_tokenizer"):  # transformers PreTrainedTokenizerFast
        text = source.backend_tokenizer.to_str()
    elif hasattr(source, "to_str"):  # tokenizers.Tokenizer
        text = source.to_str()
    else:
        raise TypeError(f"tokenizer must be a path, a tokenizers.Tokenizer or a fast tokenizer, got "
                        f"{type(source).__name__}")
    try:
        parsed = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{where} is not valid JSON: {exc}") from None
    except RecursionError:
        raise ValueError(f"{where} is not a tokenizer.json: its JSON is nested too deeply") from None
    if not isinstance(parsed, dict):
        raise ValueError(f"{where} is not a tokenizer.json: it holds a JSON {type(parsed).__name__}, not an object")
    return text


def vocabulary_size(text: str) -> int | None:
    """The number of tokens of the tokenizer.json ``text`` (its model's vocabulary and the added tokens beyond it),
    read from the JSON alone; None when its model has no vocabulary this can count."""
    try:
        parsed = json.loads(text)
        vocab = parsed["model"]["vocab"]
        added = parsed.get("added_tokens") or []
        size = len(vocab)
        return size + sum(1 for token in added if isinstance(token.get("id"), int) and token["id"] >= size)
    except (ValueError, RecursionError, KeyError, TypeError, AttributeError):
        return None
