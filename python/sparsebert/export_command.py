"""``sparsebert export SRC OUT``: its options and the call into the exporter."""

from __future__ import annotations

import argparse

from .cli_args import fraction
from .convert import export
from .convert.exporter import EMBEDDINGS_CHOICES
from .convert.packing import DENSE_BELOW
from .format.layouts import LAYOUTS


def add_arguments(p: argparse.ArgumentParser) -> None:
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
    p.add_argument("--embeddings", choices=EMBEDDINGS_CHOICES, default="fp32",
                   help="fp16: store the word, position and token type embedding tables in float16 (half their "
                        "bytes, most of a pruned small model's file; widened to fp32 at load)")
    p.add_argument("--tokenizer", default=None, metavar="PATH",
                   help="tokenizer.json, or a directory holding one (or a slow tokenizer's vocab.txt), carried into "
                        "OUT for the pipelines (default: SRC's own tokenizer, if any)")
    p.add_argument("--config", default=None, metavar="PATH",
                   help="an .onnx SRC's transformers config.json (default: the one beside it)")
    p.add_argument("--calibration", default=None, metavar="TEXTS",
                   help="with --quantize: a text file, one input per line, on which the int8 model is compared "
                        "with fp32 (default: random tokens)")
    p.add_argument("--head", choices=("none", "masked_lm"), default=None,
                   help="masked_lm: keep a masked-LM checkpoint's head (for fill-mask); none: the bare encoder "
                        "(default: a task model's head, a masked-LM model's bare encoder)")


def run(args: argparse.Namespace) -> int:
    if args.calibration is not None and args.quantize is None:
        raise ValueError("--calibration needs --quantize int8")
    export(args.src, args.out, layout=args.layout, dense_below=args.dense_below, compact=args.compact,
           quantize=args.quantize, calibration=args.calibration, tokenizer=args.tokenizer, config=args.config,
           head=args.head, embeddings=args.embeddings, verbose=True)
    return 0
