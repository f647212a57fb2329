"""``sparsebert demo``: its options and the call into the demo."""

from __future__ import annotations

import argparse

from .cli_args import fraction, positive_int, thread_count
from .demo import run_demo


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sparsity", type=fraction, default=0.9, help="fraction of encoder weights to prune (default 0.9)")
    p.add_argument("--block", type=int, choices=(1, 4), default=1, help="prune single weights or 4-blocks (default 1)")
    p.add_argument("--runs", type=positive_int, default=20, help="timed runs of each engine (default 20)")
    p.add_argument("--threads", type=thread_count, default=None,
                   help="threads for both engines (default: CPUs available to this process)")
    p.add_argument("--isa", default=None, help="force an ISA path (default: best available)")


def run(args: argparse.Namespace) -> int:
    result = run_demo(sparsity=args.sparsity, block=args.block, runs=args.runs, threads=args.threads, isa=args.isa)
    return 0 if result["ok"] else 1
