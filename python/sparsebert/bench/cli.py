"""``sparsebert bench``: the engine benchmark, the sparsity sweep (``--sweep``) and the kernels (``--kernels``).

Importing it imports nothing heavy (the harness modules import torch, onnxruntime and matplotlib only when a
benchmark actually runs), so ``sparsebert --help`` stays fast.  Progress goes to stderr and the
report to stdout, so ``sparsebert bench ... > report.txt`` keeps only the result.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import shlex
import sys
from typing import Any

from ..cli_args import thread_count
from ..convert.packing import FLOAT_LAYOUTS
from ..engine import ATTENTION_PRECISIONS, ATTENTION_VARIABLE, bf16_attention_unavailable
from . import defaults, plot, report, sweep_report
from .engine_bench import run_engine_bench
from .kernel_bench import run_kernel_bench
from .models import HEADS, RANDOM_CONFIGS, file_source, random_source
from .sweep import PRECISIONS, run_sweep

EXIT_OK, EXIT_FAILED = 0, 1
RANDOM_NAMES = tuple(RANDOM_CONFIGS)
LAYOUT_CHOICES = ("auto", *FLOAT_LAYOUTS)  # int8 is --quantize


def _list_of(kind: type, what: str):
    def parse(text: str) -> list[Any]:
        try:
            values = [kind(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of {what}") from None
        if not values:
            raise argparse.ArgumentTypeError(f"{text!r} is an empty list")
        return values

    return parse


def _positive_ints(text: str) -> list[int]:
    values = _list_of(int, "integers")(text)
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: every value must be >= 1")
    return values


def _thread_counts(text: str) -> list[int]:
    values = _positive_ints(text)
    for value in values:  # checked here, not after minutes of preparing a model
        thread_count(str(value))
    return values


def _sparsities(text: str) -> list[float]:
    values = _list_of(float, "numbers")(text)
    # Accept percentages too ("0,50,90"): anything above 1 is read as percent.
    values = [v / 100 if v > 1 else v for v in values]
    if any(not 0 <= v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: sparsities must be in [0, 1) (or percentages below 100)")
    return values


def _shapes(text: str) -> list[tuple[int, int]]:
    shapes = []
    for part in text.split(","):
        try:
            n, k = (int(v) for v in part.lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r} is not a shape NxK (e.g. 768x3072)") from None
        if n < 1 or k < 1:
            raise argparse.ArgumentTypeError(f"{part!r}: N and K must be >= 1")
        shapes.append((n, k))
    return shapes


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value > 1:
        value /= 100
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not in [0, 1)")
    return value


def _peers(text: str) -> list[str]:
    values = [p.strip().lower() for p in text.split(",") if p.strip()]
    aliases = {"ort": "onnxruntime", "torch": "pytorch", "sb": "sparsebert"}
    values = [aliases.get(v, v) for v in values]
    bad = [v for v in values if v not in defaults.PEERS]
    if bad:
        hint = " (DeepSparse: use --deepsparse-python)" if "deepsparse" in bad else ""
        raise argparse.ArgumentTypeError(f"unknown peer(s) {', '.join(bad)}; choose from "
                                         f"{', '.join(defaults.PEERS)}{hint}")
    if "sparsebert" not in values:
        values.insert(0, "sparsebert")  # every figure is a ratio to sparsebert
    return values


def _precisions(text: str) -> list[str]:
    values = list(dict.fromkeys(v.strip().lower() for v in text.split(",") if v.strip()))
    if not values or any(v not in PRECISIONS for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: choose from {', '.join(PRECISIONS)}")
    return values


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", nargs="?",
                   help="a packed .sbert file or a transformers checkpoint directory (exported on the fly)")
    what = p.add_argument_group("what to benchmark (default: the engine benchmark of MODEL or --random)")
    what.add_argument("--random", choices=RANDOM_NAMES, metavar="NAME",
                      help=f"a random-init BERT pruned on the fly instead of MODEL: {', '.join(RANDOM_NAMES)}")
    what.add_argument("--sweep", action="store_true",
                      help="latency against sparsity on a random model (--random, default bert-base)")
    what.add_argument("--kernels", action="store_true", help="the sparse GEMM kernels alone on BERT layer shapes")

    model = p.add_argument_group("random models and sweeps")
    model.add_argument("--sparsity", type=_fraction, default=0.9,
                       help="fraction of encoder weights pruned (--random; and the kernels' sparse layouts), "
                            "default 0.9")
    model.add_argument("--block", type=int, choices=(1, 4), default=1,
                       help="prune single weights (1) or 4-blocks along the input dim (4); default 1")
    model.add_argument("--sparsities", type=_sparsities, default=list(defaults.SPARSITIES), metavar="LIST",
                       help="--sweep points, comma-separated fractions or percentages (default "
                            f"{','.join(f'{s:g}' for s in defaults.SPARSITIES)})")
    model.add_argument("--head", choices=HEADS, default="none", help="task head of a --random model (default none)")
    model.add_argument("--layout", choices=LAYOUT_CHOICES, default="auto",
                       help="packed layout when exporting (--random, checkpoint dirs, sweeps); default auto")
    model.add_argument("--seed", type=int, default=0, help="seed of random weights and inputs (default 0)")
    model.add_argument("--quantize", choices=("int8",), default=None,
                       help="export the model's encoder layers as int8 (block4_int8); sparsebert fp32 on the "
                            "same weights and ONNX Runtime dynamic int8 then join the peers")
    model.add_argument("--precisions", type=_precisions, default=["fp32"], metavar="LIST",
                       help="--sweep: fp32, int8 or fp32,int8 (int8 needs --block 4); default fp32")

    run = p.add_argument_group("how to run")
    run.add_argument("--batch", type=_positive_ints, default=[1], metavar="B",
                     help="batch size (default 1); --sweep takes a list (e.g. 1,8)")
    run.add_argument("--seq", type=_positive_ints, default=[128], metavar="S", help="sequence length (default 128)")
    run.add_argument("--threads", type=_thread_counts, default=None, metavar="T",
                     help="threads for every engine (default: the CPUs available); --kernels takes a list "
                          f"(default {','.join(map(str, defaults.KERNEL_THREADS))})")
    run.add_argument("--runs", type=_positive_ints, default=[defaults.RUNS], metavar="R",
                     help=f"timed runs per engine (default {defaults.RUNS})")
    run.add_argument("--warmup", type=int, default=defaults.WARMUP, metavar="W",
                     help=f"warm-up runs per engine (default {defaults.WARMUP})")
    run.add_argument("--mode", choices=defaults.MODES, default=defaults.MODE,
                     help="interleaved: all engines in this process, round-robin, a pause before each turn; "
                          "isolated: each engine alone in a fresh process of its own, one after another; both: "
                          f"isolated, then interleaved, reported side by side (default {defaults.MODE})")
    run.add_argument("--pause-ms", type=float, default=defaults.PAUSE_MS, metavar="MS",
                     help="sleep before each engine's turn so the previous engine's spinning threads go idle "
                          f"(default {defaults.PAUSE_MS:g})")
    run.add_argument("--cold", action="store_true",
                     help="time each call right after the other engines' calls instead of after an untimed call "
                          "of the same engine (caches then hold the other engines' data)")
    run.add_argument("--isa", default=None, help="force sparsebert's ISA path (default: best available)")
    run.add_argument("--attention", choices=ATTENTION_PRECISIONS, default=None,
                     help="precision of sparsebert's attention products (default: SPARSEBERT_ATTENTION, else fp32); "
                          "bf16 needs AMX")
    run.add_argument("--peers", type=_peers, default=list(defaults.PEERS), metavar="LIST",
                     help=f"engines to run in-process (default {','.join(defaults.PEERS)})")
    run.add_argument("--deepsparse-python", default=None, metavar="PATH",
                     help="python of a DeepSparse 1.8 environment: adds DeepSparse as a peer (own process)")

    kern = p.add_argument_group("--kernels")
    kern.add_argument("--shapes", type=_shapes, default=list(defaults.KERNEL_SHAPES), metavar="LIST",
                      help="N x K shapes (default " + ",".join(f"{n}x{k}" for n, k in defaults.KERNEL_SHAPES) + ")")
    kern.add_argument("--tokens", type=_positive_ints, default=list(defaults.KERNEL_TOKENS), metavar="LIST",
                      help=f"token counts (default {','.join(map(str, defaults.KERNEL_TOKENS))})")
    kern.add_argument("--kernel-layouts", type=_list_of(str, "layouts"), default=list(defaults.KERNEL_LAYOUTS),
                      metavar="LIST", help=f"default {','.join(defaults.KERNEL_LAYOUTS)}")

    out = p.add_argument_group("output")
    out.add_argument("--json", metavar="OUT.json", help="write the full result (raw timings included) as JSON")
    out.add_argument("--plot", metavar="OUT.png", help="write a plot (PNG)")
    out.add_argument("--markdown", metavar="OUT.md", help="write the result as a Markdown table")
    out.add_argument("--quiet", action="store_true", help="no progress messages on stderr")
    out.add_argument("--render", metavar="RESULT.json",
                     help="measure nothing: print (and --markdown / --plot) a result saved earlier with --json")


def _single(args: argparse.Namespace, name: str) -> int:
    values = getattr(args, name)
    if len(values) != 1:
        raise ValueError(f"--{name} takes one value here (lists are for --kernels, and --batch for --sweep), got "
                         f"{values}")
    return values[0]


def _threads(args: argparse.Namespace) -> int:
    if args.threads is None:
        try:
            return len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            return os.cpu_count() or 1
    return _single(args, "threads")


def _check_outputs(args: argparse.Namespace) -> None:
    # Fail before a benchmark of minutes rather than when writing its result.
    for option in ("json", "plot", "markdown"):
        path = getattr(args, option)
        if path:
            folder = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(folder):
                raise FileNotFoundError(f"--{option}: directory does not exist: {folder}")
            if os.path.isdir(path):
                raise IsADirectoryError(errno.EISDIR, f"--{option} names a directory, not a file", path)


def _write(args: argparse.Namespace, result: dict[str, Any], markdown: str, plotter: str) -> None:
    if args.json:
        report.write_json(result, args.json)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(markdown)
    if args.plot:
        getattr(plot, plotter)(result, args.plot)


RENDERERS = {  # result kind -> (text for the terminal, Markdown, plot function name)
    "engine": (report.engine_text, report.engine_markdown, "engine_plot"),
    "sweep": (sweep_report.sweep_markdown, sweep_report.sweep_markdown, "sweep_plot"),
    "kernels": (report.kernel_markdown, report.kernel_markdown, "kernel_plot"),
}


def _render(args: argparse.Namespace) -> int:
    """Re-render a saved result (tables change format more often than measurements are worth repeating)."""
    with open(args.render, encoding="utf-8") as f:
        try:
            result = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{args.render} is not a sparsebert bench result: not JSON ({exc})") from None
    kind = result.get("kind") if isinstance(result, dict) else None
    if kind not in RENDERERS:
        raise ValueError(f"{args.render} is not a sparsebert bench result (kind {kind!r})")
    text, markdown, plotter = RENDERERS[kind]
    print(text(result))
    _write(argparse.Namespace(json=None, markdown=args.markdown, plot=args.plot), result, markdown(result), plotter)
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    """Run the benchmark ``args`` asks for; print the report; return the exit code (``args.argv``: the command
    line as given to the CLI's main, recorded in the report; None: sys.argv's)."""
    if not getattr(args, "attention", None):
        return _run(args)
    if args.kernels or args.render:
        raise ValueError("--attention is for timing engines, not --kernels or --render")
    why_not = bf16_attention_unavailable(args.isa) if args.attention == "bf16" else None
    if why_not:
        raise ValueError(f"--attention bf16: {why_not}")
    # Through the environment, so that the engines of isolated worker processes load with it too; for this run only.
    previous = os.environ.get(ATTENTION_VARIABLE)
    os.environ[ATTENTION_VARIABLE] = args.attention
    try:
        return _run(args)
    finally:
        if previous is None:
            del os.environ[ATTENTION_VARIABLE]
        else:
            os.environ[ATTENTION_VARIABLE] = previous


def _run(args: argparse.Namespace) -> int:
    argv = getattr(args, "argv", None)
    command = "sparsebert " + shlex.join(list(argv)) if argv is not None else None
    log = None if args.quiet else (lambda msg: print(f"[bench] {msg}", file=sys.stderr, flush=True))
    _check_outputs(args)
    if args.render:
        return _render(args)
    if args.sweep and args.kernels:
        raise ValueError("--sweep and --kernels are separate benchmarks; run one at a time")

    if args.kernels:
        threads = args.threads or list(defaults.KERNEL_THREADS)
        result = run_kernel_bench(args.shapes, args.tokens, args.kernel_layouts, args.sparsity, threads,
                                  _single(args, "runs"), args.isa, args.seed, command, log)
        text = report.kernel_markdown(result)
        print(text)
        _write(args, result, text, "kernel_plot")
        return EXIT_OK

    if args.precisions != ["fp32"] and not args.sweep:
        raise ValueError("--precisions is for --sweep; one model's precision is --quantize")
    common = dict(seq=_single(args, "seq"), threads=_threads(args), runs=_single(args, "runs"), warmup=args.warmup,
                  peers=args.peers, isa=args.isa, deepsparse_python=args.deepsparse_python, pause_ms=args.pause_ms,
                  command=command, log=log, rewarm=not args.cold, mode=args.mode)
    if args.sweep:
        if args.model:
            raise ValueError("--sweep prunes a random model (--random NAME); it does not take MODEL")
        if args.quantize:
            raise ValueError("--sweep takes --precisions fp32,int8 rather than --quantize")
        result = run_sweep(args.random or "bert-base", args.sparsities, args.block, batch=args.batch,
                           layout=args.layout, seed=args.seed, head=args.head, precisions=args.precisions, **common)
        text = sweep_report.sweep_markdown(result)
        print(text)
        _write(args, result, text, "sweep_plot")
        return EXIT_OK if all(p["agree"] for p in result["points"]) else EXIT_FAILED

    if bool(args.model) == bool(args.random):
        raise ValueError("give either MODEL (a .sbert file or checkpoint directory) or --random NAME")
    if log:
        log("preparing the model" + (" (random init, pruning, export)" if args.random else ""))
    source = (random_source(args.random, args.sparsity, args.block, args.seed, args.head, args.layout,
                            quantize=args.quantize)
              if args.random else file_source(args.model, args.layout, quantize=args.quantize))
    with source:
        result = run_engine_bench(source, batch=_single(args, "batch"), seed=args.seed, **common)
    print(report.engine_text(result))
    _write(args, result, report.engine_markdown(result), "engine_plot")
    return EXIT_OK if result["agree"] else EXIT_FAILED


__all__ = ["add_arguments", "run"]
