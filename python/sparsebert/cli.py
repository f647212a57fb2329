"""The ``sparsebert`` command: export, info, run, demo, bench, serve.

A user's mistake (a bad file or option, an unwritable destination, a full disk) ends in one line on stderr,
``sparsebert CMD: error: ...``, and exit status 2; a traceback means a bug in sparsebert.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from . import info_command, run_command, serve_command
from ._version import __version__
from .bench import cli as bench_cli
from .cli_args import EXIT_ERROR, OneLineErrorParser, fraction, parse_intermixed, positive_int, thread_count
from .convert import export
from .convert.packing import DENSE_BELOW
from .demo import run_demo
from .errors import SparseBertError
from .extras import explain
from .spelling import command_line
from .format.layouts import LAYOUTS
from .pipelines import TASKS as PIPELINE_TASKS  # noqa: F401 (the tasks `run` offers)

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130
# What a user's mistake raises (SparseBertError, ValueError), or the system on their behalf (OSError: missing,
# unreadable or unwritable paths, a full disk); ImportError: an optional dependency that is not installed.
USER_ERRORS = (SparseBertError, ValueError, OSError, ImportError)


def _parser(commands_found: dict[str, argparse.ArgumentParser] | None = None) -> argparse.ArgumentParser:
    """The parser; its subcommands' parsers go into ``commands_found`` by name."""
    parser = OneLineErrorParser(prog="sparsebert", description="Compiled sparse inference for pruned BERT encoders.")
    parser.add_argument("--version", action="version", version=f"sparsebert {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("export", help="pack a transformers BERT / RoBERTa / DistilBERT checkpoint directory "
                                           "into a .sbert file")
    p.add_argument("src", metavar="SRC",
                   help="checkpoint directory (config.json + model.safetensors or pytorch_model.bin), or an .onnx "
                        "file with its config.json beside it")
    p.add_argument("out", metavar="OUT", help="the .sbert file to write")
    p.add_argument("--layout", choices=("auto", *LAYOUTS), default="auto",
                   help="packed layout for every linear layer (default: auto, chosen per layer)")
    p.add_argument("--dense-below", type=fraction, default=DENSE_BELOW, metavar="X",
                   help=f"with --layout auto, keep layers with sparsity below X dense (default {DENSE_BELOW})")
    p.add_argument("--no-compact", dest="compact", action="store_false",
                   help="keep attention heads and FFN neurons that cannot change the output (default: remove them)")
    p.add_argument("--quantize", choices=("int8",), default=None,
                   help="int8: encoder layers as int8 4-blocks (one scale per output channel), run with VNNI; the "
                        "pooler and heads stay fp32")
    p.add_argument("--tokenizer", default=None, metavar="PATH",
                   help="tokenizer.json, or a directory holding one, carried into OUT for the pipelines (default: "
                        "SRC's own tokenizer.json, if any)")
    p.add_argument("--config", default=None, metavar="PATH",
                   help="an .onnx SRC's transformers config.json (default: the one beside it)")
    p.add_argument("--calibration", default=None, metavar="TEXTS",
                   help="with --quantize: a text file, one input per line, on which the int8 model is compared "
                        "with fp32 (default: random tokens)")
    p.add_argument("--head", choices=("none", "masked_lm"), default=None,
                   help="masked_lm: keep a masked-LM checkpoint's head (for fill-mask); none: the bare encoder "
                        "(default: a task model's head, a masked-LM model's bare encoder)")

    p = commands.add_parser("info", help="describe a .sbert file: versions, config and per-layer table")
    p.add_argument("file", metavar="FILE")

    p = commands.add_parser("demo", help="prune the bundled all-MiniLM-L6-v2 and compare with PyTorch")
    p.add_argument("--sparsity", type=fraction, default=0.9, help="fraction of encoder weights to prune (default 0.9)")
    p.add_argument("--block", type=int, choices=(1, 4), default=1, help="prune single weights or 4-blocks (default 1)")
    p.add_argument("--runs", type=positive_int, default=20, help="timed runs of each engine (default 20)")
    p.add_argument("--threads", type=thread_count, default=None,
                   help="threads for both engines (default: CPUs available to this process)")
    p.add_argument("--isa", default=None, help="force an ISA path (default: best available)")

    p = commands.add_parser("run", help="run a pipeline on texts: feature-extraction, sentence-embedding, "
                                        "text-classification, token-classification, question-answering, rerank; "
                                        "prints JSON lines")
    run_command.add_arguments(p)

    p = commands.add_parser("serve", help="serve models over HTTP (OpenAI embeddings, text-embeddings-inference "
                                          "routes, metrics) with dynamic batching")
    serve_command.add_arguments(p)

    p = commands.add_parser("bench", help="benchmark against ONNX Runtime, PyTorch and DeepSparse; sweeps; kernels",
                            description="Time sparsebert and its peers on the same weights and inputs, "
                                        "interleaved; report medians, p10, ratios and GFLOP/s.")
    bench_cli.add_arguments(p)
    if commands_found is not None:
        commands_found.update(commands.choices)
    return parser


def _export(args: argparse.Namespace) -> int:
    if args.calibration is not None and args.quantize is None:
        raise ValueError("--calibration needs --quantize int8")
    export(args.src, args.out, layout=args.layout, dense_below=args.dense_below, compact=args.compact,
           quantize=args.quantize, calibration=args.calibration, tokenizer=args.tokenizer, config=args.config,
           head=args.head, verbose=True)
    return EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    result = run_demo(sparsity=args.sparsity, block=args.block, runs=args.runs, threads=args.threads, isa=args.isa)
    return EXIT_OK if result["ok"] else EXIT_FAILED


def _bench(args: argparse.Namespace) -> int:
    return bench_cli.run(args, args.argv)


COMMANDS = {"export": _export, "info": info_command.run, "run": run_command.run, "demo": _demo, "bench": _bench,
            "serve": serve_command.run}


def main(argv: Sequence[str] | None = None) -> int:
    commands: dict[str, argparse.ArgumentParser] = {}
    parser = _parser(commands)
    args = parse_intermixed(parser, commands, sys.argv[1:] if argv is None else argv)
    args.argv = None if argv is None else list(argv)  # bench records the command: as given here, else sys.argv
    real_stdout = sys.stdout
    sys.stdout = _NamedStandardOutput(real_stdout)
    try:
        with command_line():  # messages name flags (--tokenizer), not keywords (tokenizer=)
            code = COMMANDS[args.command](args)
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
