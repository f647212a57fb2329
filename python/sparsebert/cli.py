"""The ``sparsebert`` command: export, info, run, demo, bench, serve.

A user's mistake (a bad file or option, an unwritable destination, a full disk) ends in one line on stderr,
``sparsebert CMD: error: ...``, and exit status 2; a traceback means a bug in sparsebert.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any

from ._version import __version__
from .cli_args import EXIT_ERROR, OneLineErrorParser, parse_intermixed
from .errors import SparseBertError
from .extras import explain
from .spelling import command_line

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130
# What a user's mistake raises (SparseBertError, ValueError), or the system on their behalf (OSError: missing,
# unreadable or unwritable paths, a full disk); ImportError: an optional dependency that is not installed.
USER_ERRORS = (SparseBertError, ValueError, OSError, ImportError)

# Each command's module (add_arguments(parser), run(args) -> exit code) and its one-line help. Only the module of
# the command given is imported: `sparsebert serve` and `sparsebert run` load the runtime alone, never the
# converter, torch or the benchmark harness that `export`, `demo` and `bench` need.
COMMANDS = {
    "export": ("sparsebert.export_command",
               "pack a transformers BERT / RoBERTa / DistilBERT checkpoint directory into a .sbert file"),
    "info": ("sparsebert.info_command", "describe a .sbert file: versions, config and per-layer table"),
    "demo": ("sparsebert.demo_command", "prune the bundled all-MiniLM-L6-v2 and compare with PyTorch"),
    "run": ("sparsebert.run_command", "run a pipeline on texts: feature-extraction, sentence-embedding, "
                                      "text-classification, token-classification, question-answering, fill-mask, "
                                      "rerank; prints JSON lines"),
    "serve": ("sparsebert.serve_command", "serve models over HTTP (OpenAI embeddings, text-embeddings-inference "
                                          "routes, metrics) with dynamic batching"),
    "bench": ("sparsebert.bench.cli", "benchmark against ONNX Runtime, PyTorch and DeepSparse; sweeps; kernels"),
}
DESCRIPTIONS = {"bench": "Time sparsebert and its peers on the same weights and inputs, interleaved or each alone "
                         "in its own process; report medians, p10, ratios and GFLOP/s."}


def command_given(argv: Sequence[str]) -> str | None:
    """The command ``argv`` names (its first word, after any top-level option), or None."""
    for word in argv:
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def _parser(command: str | None, module: Any,
            commands_found: dict[str, argparse.ArgumentParser] | None = None) -> argparse.ArgumentParser:
    """The parser: every command listed with its help, ``command``'s options added by its ``module``; the
    subcommands' parsers go into ``commands_found`` by name."""
    parser = OneLineErrorParser(prog="sparsebert", description="Compiled sparse inference for pruned BERT encoders.")
    parser.add_argument("--version", action="version", version=f"sparsebert {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        p = commands.add_parser(name, help=help_text, description=DESCRIPTIONS.get(name, help_text))
        if name == command:
            module.add_arguments(p)
    if commands_found is not None:
        commands_found.update(commands.choices)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    command = command_given(words)
    try:  # the dispatch is the point of this import: one command's module, not all of them (see COMMANDS)
        module = importlib.import_module(COMMANDS[command][0]) if command is not None else None
    except ImportError as exc:  # an optional dependency the command's module needs
        print(f"sparsebert {command}: error: {_one_line(explain(exc, 'this command'))}", file=sys.stderr)
        return EXIT_ERROR
    commands: dict[str, argparse.ArgumentParser] = {}
    parser = _parser(command, module, commands)
    args = parse_intermixed(parser, commands, words)
    args.argv = None if argv is None else list(argv)  # bench records the command: as given here, else sys.argv
    real_stdout = sys.stdout
    sys.stdout = _NamedStandardOutput(real_stdout)
    try:
        with command_line():  # messages name flags (--tokenizer), not keywords (tokenizer=)
            code = module.run(args)
        sys.stdout.flush()  # a full disk or a closed pipe is reported here, not at exit
        return code
    except BrokenPipeError:
        # `sparsebert info m.sbert | head`: the reader left; stop quietly, as Unix tools do.
        _discard_standard_output(real_stdout)
        return EXIT_OK
    except USER_ERRORS as exc:
        if isinstance(exc, StandardOutputError):
            _discard_standard_output(real_stdout)
        if isinstance(exc, ImportError):  # the demo and the benchmarks import their optional dependencies directly
            exc = explain(exc, "this command")
        print(f"sparsebert {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"sparsebert {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        sys.stdout = real_stdout


def _one_line(exc: BaseException) -> str:
    """The message of an expected failure on one line; an OSError as ``path: reason``."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        paths = f"{exc.filename} -> {exc.filename2}" if exc.filename2 is not None else f"{exc.filename}"
        message = f"{paths}: {exc.strerror}"
    elif isinstance(exc, OSError) and exc.strerror:
        message = exc.strerror
    else:
        message = str(exc) or type(exc).__name__
    return " ".join(message.split())  # one line even if a library's message has several


class StandardOutputError(OSError):
    """Writing to standard output failed (a full disk, an I/O error)."""


class _NamedStandardOutput:
    """sys.stdout whose write errors say that standard output is what failed (an OSError from print() carries no
    file name); a closed pipe stays a BrokenPipeError."""

    def __init__(self, stream: Any):
        self._stream = stream

    def write(self, text: str) -> int:
        return self._named(self._stream.write, text)

    def flush(self) -> None:
        self._named(self._stream.flush)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    @staticmethod
    def _named(function: Any, *args: Any) -> Any:
        try:
            return function(*args)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise StandardOutputError(exc.errno, f"cannot write to standard output: {exc.strerror}") from None


def _discard_standard_output(stream: Any) -> None:
    # Whatever is still buffered would fail again when Python flushes at exit, with a message of its own.
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())
    except (OSError, ValueError):  # a stream without a descriptor (tests' captures): nothing flushes it at exit
        pass


if __name__ == "__main__":
    sys.exit(main())
