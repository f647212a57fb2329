"""The command line's argument parser and value types: errors as one line (``sparsebert CMD: error: ...``, exit 2,
no usage dump)."""

from __future__ import annotations

import argparse
from typing import NoReturn

from ._native import core

EXIT_ERROR = 2


class OneLineErrorParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line; subcommand parsers inherit the class."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{value} is not in [0, 1]")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not >= 1")
    return value


def thread_count(text: str) -> int:
    """A thread count the engine takes, checked before any work is done."""
    value = positive_int(text)
    limit = core().MAX_THREADS
    if value > limit:
        raise argparse.ArgumentTypeError(f"{value} is more than the {limit} threads the engine runs")
    return value
