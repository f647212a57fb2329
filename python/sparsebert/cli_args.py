"""The command line's argument parser and value types: errors as one line (``sparsebert CMD: error: ...``, exit 2,
no usage dump), and options accepted before, between or after the positional arguments."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import NoReturn

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
