"""``sparsebert run``: a pipeline over texts given as arguments or read from standard input, one JSON line per
text. Input is read and results are written batch by batch (each batch flushed as soon as it is computed), so
memory holds one batch whatever the input's length and a reader downstream sees results while input still
arrives."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from .cli_args import positive_int, thread_count
from .pipelines import TASKS as PIPELINE_TASKS, pipeline

EXIT_OK = 0
DEFAULT_BATCH = 8
UTF8_BOM = "\ufeff"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("task", choices=PIPELINE_TASKS)
    p.add_argument("model", metavar="MODEL", help="a packed .sbert file")
    p.add_argument("texts", metavar="TEXT", nargs="*",
                   help="texts to run (default: one per line of standard input, UTF-8; blank lines are skipped)")
    p.add_argument("--tokenizer", default=None,
                   help="tokenizer.json or a directory holding one (default: the one carried in MODEL)")
    p.add_argument("--pooling", choices=("mean", "cls"), default=None,
                   help="feature-extraction: one sentence embedding per text instead of token vectors")
    p.add_argument("--normalize", action="store_true", help="feature-extraction with --pooling: L2-normalise")
    p.add_argument("--question", default=None, help="question-answering: the question (the texts are contexts)")
    p.add_argument("--query", default=None,
                   help="rerank: the query; the texts are ranked against it and printed best first, with their "
                        "index and score (all texts are read before the first result)")
    p.add_argument("--max-seq-len", type=positive_int, default=None, metavar="N",
                   help="question-answering: tokens per window (default 384, at most the model's)")
    p.add_argument("--doc-stride", type=int, default=None, metavar="N",
                   help="question-answering: context tokens shared by consecutive windows (default 128)")
    p.add_argument("--top-k", type=positive_int, default=None, metavar="K",
                   help="fill-mask: best tokens per mask (default 5)")
    p.add_argument("--batch-size", type=positive_int, default=DEFAULT_BATCH, metavar="N",
                   help=f"texts run together and printed together (default {DEFAULT_BATCH})")
    p.add_argument("--threads", type=thread_count, default=None, help="threads (default: CPUs available)")


def run(args: argparse.Namespace) -> int:
    if (args.task == "question-answering") != (args.question is not None):
        raise ValueError("--question goes with question-answering, and question-answering needs it")
    if (args.task == "rerank") != (args.query is not None):
        raise ValueError("--query goes with rerank, and rerank needs it")
    windows = {key: value for key, value in (("max_seq_len", args.max_seq_len), ("doc_stride", args.doc_stride))
               if value is not None}
    if windows and args.question is None:
        raise ValueError("--max-seq-len and --doc-stride go with question-answering")
    if args.top_k is not None and args.task != "fill-mask":
        raise ValueError("--top-k goes with fill-mask")
    pipe = pipeline(args.task, args.model, tokenizer=args.tokenizer, num_threads=args.threads)
    options: dict[str, Any] = {}
    if args.task == "feature-extraction":
        options = {"pooling": args.pooling, "normalize": args.normalize}
    elif args.task == "sentence-embedding":  # the model's own pooling unless the options say otherwise
        options = {"pooling": args.pooling, "normalize": True if args.normalize else None}
    elif args.task == "fill-mask" and args.top_k is not None:
        options = {"top_k": args.top_k}
    texts = iter(args.texts) if args.texts else standard_input_lines()
    if args.task == "rerank":
        return _rerank(pipe, list(texts), args.query, args.batch_size)
    to_list = lambda value: np.asarray(value).tolist()  # noqa: E731 (arrays of feature-extraction)
    count = 0
    for batch in batches(texts, args.batch_size):
        if args.question is not None:
            results = pipe([{"question": args.question, "context": text} for text in batch],
                           batch_size=args.batch_size, **windows)
            lines = [{"question": args.question, "context": t, "result": r} for t, r in zip(batch, results)]
        else:
            results = pipe(batch, batch_size=args.batch_size, **options)
            lines = [{"text": t, "result": r} for t, r in zip(batch, results)]
        sys.stdout.write("".join(json.dumps(line, default=to_list, ensure_ascii=False) + "\n" for line in lines))
        sys.stdout.flush()
        count += len(batch)
    if not count:
        raise ValueError("no texts: pass them as arguments or one per line on standard input")
    return EXIT_OK


def _rerank(pipe: Any, texts: list[str], query: str, batch_size: int) -> int:
    """One JSON line per text, best first: a ranking needs every text's score before the first line."""
    if not texts:
        raise ValueError("no texts: pass them as arguments or one per line on standard input")
    ranked = pipe(texts, query=query, batch_size=batch_size, return_text=True)
    sys.stdout.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ranked))
    return EXIT_OK


def batches(texts: Iterable[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def standard_input_lines() -> Iterator[str]:
    """The non-blank lines of standard input, decoded as UTF-8 one at a time (ValueError naming the first line
    that is not), without their line ends and a leading byte order mark."""
    stream = getattr(sys.stdin, "buffer", sys.stdin)  # bytes, so that a bad line is named, not replaced
    for number, line in enumerate(stream, 1):
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(f"standard input line {number} is not UTF-8 ({exc.reason} at byte {exc.start} of "
                                 "the line)") from None
        line = line[:-1] if line.endswith("\n") else line
        line = line[:-1] if line.endswith("\r") else line
        if number == 1 and line.startswith(UTF8_BOM):
            line = line[1:]
        if line.strip():
            yield line
