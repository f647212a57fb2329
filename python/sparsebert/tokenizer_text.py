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
    ``tokenizers.Tokenizer`` or a ``transformers`` fast tokenizer."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if os.path.isdir(path):
            path = os.path.join(path, TOKENIZER_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no tokenizer file at {path}")
        with open(path, encoding="utf-8") as f:
            text = f.read()
    elif hasattr(source, "backend_tokenizer"):  # transformers PreTrainedTokenizerFast
        text = source.backend_tokenizer.to_str()
    elif hasattr(source, "to_str"):  # tokenizers.Tokenizer
        text = source.to_str()
    else:
        raise TypeError(f"tokenizer must be a path, a tokenizers.Tokenizer or a fast tokenizer, got "
                        f"{type(source).__name__}")
    try:
        json.loads(text)
    except ValueError as exc:
        raise ValueError(f"the tokenizer is not valid JSON: {exc}") from None
    return text
