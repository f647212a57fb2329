"""``sparsebert info FILE``: what a packed file holds — versions, producer, model, whether pipelines can run on it
(a tokenizer, a sentence pooling recipe), what its export recorded, and the per-layer table."""

from __future__ import annotations

import argparse
import os
from typing import Any

from .convert.packing import DENSE_BELOW
from .convert.report import (ExportReport, describe_calibration, describe_compaction, describe_density,
                             describe_quantized_checkpoint, format_bytes)
from .format import read_model
from .spelling import option
from .tokenizer_text import vocabulary_size

EXIT_OK = 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE")


def run(args: argparse.Namespace) -> int:
    model = read_model(args.file)
    c, producer = model.config, model.producer
    file_bytes = os.path.getsize(model.path)
    print(f"file: {model.path} ({format_bytes(file_bytes)})")
    print(f"format_version {model.format_version}, layout_revision {model.layout_revision}")
    if producer:
        made = " ".join(str(producer[k]) for k in ("name", "version") if k in producer)
        source = f" from {producer['source']}" if "source" in producer else ""
        print(f"producer: {made or '?'}{source}")
    print(f"model: {c['model_type']}, {c['num_hidden_layers']} layers, hidden {c['hidden_size']}, "
          f"{c['num_attention_heads']} heads, intermediate {c['intermediate_size']}, act {c['hidden_act']}")
    print(f"       vocab {c['vocab_size']}, max positions {c['max_position_embeddings']}, "
          f"token types {c['type_vocab_size']}, layer_norm_eps {c['layer_norm_eps']:g}")
    labelled = c["head"] in ("sequence_classification", "token_classification")
    head = c["head"] + (f" ({c['num_labels']} labels)" if labelled else "")
    print(f"head: {head}, pooler: {'yes' if c['has_pooler'] else 'no'}")
    print(describe_tokenizer(model.header.get("tokenizer")))
    print(describe_pooling(c))
    compaction = describe_compaction(c)
    if compaction:
        print(compaction)
    for key, describe in (("quantized_checkpoint", describe_quantized_checkpoint),
                          ("calibration", describe_calibration)):
        if key in producer:
            try:
                print(describe(producer[key]))
            except (KeyError, TypeError, ValueError, AttributeError):  # another writer's record: shown raw
                print(f"{key}: {producer[key]!r}")
    report = ExportReport.from_file(model.path, model.linears, model.tensors, file_bytes)
    density = describe_density(report, producer.get("dense_below", DENSE_BELOW))
    if density:
        print(density)
    print()
    print(report)
    return EXIT_OK


def describe_tokenizer(text: Any) -> str:
    """Whether the file carries a tokenizer (pipelines need one)."""
    if not isinstance(text, str):
        return f"tokenizer: no — pipelines need one: {option('pipeline_tokenizer')}"
    size = vocabulary_size(text)
    return "tokenizer: yes" + (f" (vocab {size})" if size is not None else "")


def describe_pooling(config: dict[str, Any]) -> str:
    """The sentence-embedding recipe the file records (a sentence-transformers export), or none."""
    pooling = config.get("sentence_pooling")
    if pooling is None:
        return f"sentence pooling: none recorded (sentence-embedding: {option('pooling')})"
    details = ["normalized" if config.get("sentence_normalize") else "not normalized"]
    if "sentence_max_length" in config:
        details.append(f"max {config['sentence_max_length']} tokens")
    return f"sentence pooling: {pooling} ({', '.join(details)})"
