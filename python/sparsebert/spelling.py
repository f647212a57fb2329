"""How a message names an option: as the Python keyword (``pipeline(..., tokenizer=...)``) or, inside the
``sparsebert`` command, as its flag (``--tokenizer PATH``). Messages ask ``option(name)`` when they are made; the
command line wraps each command in ``command_line()``. Imports only the standard library."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

# name -> (the Python API's spelling, the command line's)
SPELLINGS = {
    "pipeline_tokenizer": ("pass pipeline(..., tokenizer=...)", "pass --tokenizer PATH"),
    "export_tokenizer": ("export(..., tokenizer=...)", "sparsebert export --tokenizer PATH"),
    "pooling": ("pass pooling='mean' or 'cls'", "pass --pooling mean or --pooling cls"),
    "onnx_config": ("pass export(..., config=) with the transformers config (a dict or a config.json path)",
                    "pass --config with the transformers config.json"),
    "quantize_int8": ("quantize='int8'", "--quantize int8"),
    "embeddings_fp32": ("embeddings='fp32'", "--embeddings fp32"),
    "config": ("config=", "--config"),
}

_ON_THE_COMMAND_LINE = contextvars.ContextVar("sparsebert_on_the_command_line", default=False)


def option(name: str) -> str:
    """The spelling of option ``name`` (a key of SPELLINGS) for the caller at hand."""
    python, flag = SPELLINGS[name]
    return flag if _ON_THE_COMMAND_LINE.get() else python


@contextlib.contextmanager
def command_line() -> Iterator[None]:
    """Within this block, messages name command-line flags."""
    token = _ON_THE_COMMAND_LINE.set(True)
    try:
        yield
    finally:
        _ON_THE_COMMAND_LINE.reset(token)


__all__ = ["SPELLINGS", "command_line", "option"]
