"""A checkpoint directory's tokenizer when it has no ``tokenizer.json``: many published checkpoints (the oBERT and
Prune-OFA families among them) carry only a slow tokenizer's files (``vocab.txt``; RoBERTa's ``vocab.json`` +
``merges.txt``). transformers converts those to a fast tokenizer exactly as ``AutoTokenizer`` does when it loads
the directory, so the packed file gets the tokenizer the checkpoint's users already run."""

from __future__ import annotations

import os

from ..extras import require

# The files a slow tokenizer is saved as; one of them means the directory has a tokenizer worth converting.
SLOW_TOKENIZER_FILES = ("vocab.txt", "vocab.json", "sentencepiece.bpe.model", "spiece.model")


def has_slow_tokenizer(directory: str) -> bool:
    return any(os.path.isfile(os.path.join(directory, name)) for name in SLOW_TOKENIZER_FILES)


def converted_tokenizer(directory: str):
    """The fast tokenizer transformers builds from ``directory``'s slow tokenizer files (offline: local files
    only); ValueError naming the directory when transformers cannot build one."""
    try:
        auto = require("transformers", f"converting the tokenizer files of {directory}").AutoTokenizer
        tokenizer = auto.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{directory} has tokenizer files but transformers could not read them: {exc}; "
                         "pass a tokenizer.json with --tokenizer / tokenizer=") from None
    if not hasattr(tokenizer, "backend_tokenizer"):
        raise ValueError(f"{directory}: transformers gave a slow tokenizer ({type(tokenizer).__name__}) that "
                         "cannot be converted to a tokenizer.json; pass one with --tokenizer / tokenizer=")
    return tokenizer
