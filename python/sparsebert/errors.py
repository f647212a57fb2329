"""Exceptions raised by sparsebert.

Both concrete errors are also ``ValueError`` so callers that only know the
standard library still catch them; ``SparseBertError`` lets callers catch
everything this package raises on purpose in one clause.
"""

from __future__ import annotations

import os


class SparseBertError(Exception):
    """Base class of the errors sparsebert raises deliberately."""


class ModelFormatError(SparseBertError, ValueError):
    """A ``.sbert`` file is missing, corrupt, inconsistent or newer than this reader."""

    def __init__(self, message: str, path: str | os.PathLike | None = None):
        self.path = None if path is None else os.fspath(path)
        self.reason = message
        # The path goes first so a one-line CLI message says which file is bad.
        super().__init__(message if path is None else f"{self.path}: {message}")


class UnsupportedModelError(SparseBertError, ValueError):
    """A checkpoint that the exporter cannot represent; the message names what does not fit."""
