"""The command line's argument parser and value types: errors as one line (``sparsebert CMD: error: ...``, exit 2,
no usage dump), and options accepted before, between or after the positional arguments."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any, NoReturn

from ._native import core

EXIT_ERROR = 2


class OneLineErrorParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line; subcommand parsers inherit the class."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def parse_intermixed(parser: argparse.ArgumentParser, commands: dict[str, argparse.ArgumentParser],
                     argv: Sequence[str]) -> argparse.Namespace:
    """``parser``'s arguments, its subcommand's parsed with ``parse_intermixed_args`` (which argparse does not
    support for subparsers), so that ``run question-answering m.sbert --question Q CONTEXT`` reads CONTEXT as a
    text rather than an unrecognized argument. Anything before the command (--help, --version) or without a known
    command is left to ``parser``."""
    argv = list(argv)
    if not argv or argv[0] not in commands:
        return parser.parse_args(argv)
    args = commands[argv[0]].parse_intermixed_args(argv[1:])
    args.command = argv[0]
    return args


def bounded(kind: type, low: float, high: float | None = None, what: str = "a number") -> Any:
    """An argparse type: the text as ``kind`` (int or float) in [low, high]; without ``high``, any finite value
    from ``low`` up (NaN is refused either way)."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not (low <= value <= high if high is not None else low <= value < float("inf")):
            bounds = f"in [{low}, {high}]" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"{value} is not {bounds}")
        return value
    return parse


fraction = bounded(float, 0.0, 1.0)
positive_int = bounded(int, 1, what="an integer")


def thread_count(text: str) -> int:
    """A thread count the engine takes, checked before any work is done."""
    value = positive_int(text)
    limit = core().MAX_THREADS
    if value > limit:
        raise argparse.ArgumentTypeError(f"{value} is more than the {limit} threads the engine runs")
    return value
