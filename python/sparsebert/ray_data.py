"""Batch inference on Ray Data: ``SparsebertPredictor`` is a callable class for ``Dataset.map_batches``, so each
Ray actor loads the packed model once (in its constructor) and runs the pipeline on every batch it is handed:

    ds = ray.data.from_items([{"text": t} for t in texts])
    ds = ds.map_batches(SparsebertPredictor, batch_size=256, concurrency=2, batch_format="numpy",
                        fn_constructor_kwargs={"model": "minilm.sbert", "task": "sentence-embedding"})

A batch is a dict of numpy arrays (``batch_format="numpy"``) or a pandas DataFrame (``"pandas"``); the predictor
returns it with the task's output columns added, row for row, each row's output what ``sparsebert.pipeline`` gives
for that row alone. Within a batch, texts run in order of length (less padding) and come back in the batch's
order; across blocks, Ray Data keeps the dataset's order only with
``DataContext.get_current().execution_options.preserve_order = True``.

Imports neither Ray nor pandas: the class is plain Python, which Ray instantiates in its actors.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .pipelines import pipeline

# task -> (the columns it reads, the columns it writes), by their default names (``columns=`` renames them)
TASK_COLUMNS = {
    "sentence-embedding": (("text",), ("embedding",)),
    "feature-extraction": (("text",), ("embedding",)),  # "last_hidden_state" without pooling=
    "text-classification": (("text",), ("label", "score")),  # "labels", "scores" (best first) unless top_k=1
    "token-classification": (("text",), ("entities",)),
    "rerank": (("query", "text"), ("score",)),
    "question-answering": (("question", "context"), ("answer", "score", "start", "end")),
}
# Options that would make a row's output something other than one result per row.
_NOT_PER_ROW = {"rerank": ("top_k", "return_text", "query"), "question-answering": ("top_k",)}


def _ray_cpus() -> int | None:
    """The CPUs Ray assigned to this actor, when Ray runs it (Ray is then already imported), else None."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    return max(1, int(cpus)) if cpus else None


class SparsebertPredictor:
    """A pipeline for ``Dataset.map_batches``: ``SparsebertPredictor(model, task, ...)`` loads ``model`` (a packed
    .sbert file, at the same path on every node) once; calling it on a batch returns the batch with the outputs.

    task: one of TASK_COLUMNS. Reads column "text" ("query" and "text" for rerank, "question" and "context" for
    question-answering) and writes sentence-embedding: "embedding" (float32 [H]); feature-extraction: "embedding"
    with ``pooling=``, else "last_hidden_state" ([tokens, H] per row); text-classification: "label" and "score",
    or with ``top_k`` other than 1 "labels" and "scores" (lists, best first); token-classification: "entities"
    (the pipeline's list of dicts); rerank: "score" (of the row's pair); question-answering: "answer", "score",
    "start", "end". ``columns`` maps these names to the dataset's, e.g. ``{"text": "body", "embedding": "vec"}``;
    an output column the batch already has is an error (rename it), never overwritten.
    options: the pipeline's call options (``pooling``, ``normalize``, ``top_k``, ``raw_scores``, ...).
    num_threads: default the CPUs Ray assigned to the actor (``num_cpus=``), or all when not run by Ray.
    pipeline_batch_size: texts per engine run.
    """

    def __init__(self, model: str | os.PathLike, task: str = "sentence-embedding", *,
                 columns: Mapping[str, str] | None = None, tokenizer: Any = None, num_threads: int | None = None,
                 isa: str | None = None, pipeline_batch_size: int = 32, **options: Any):
        if task not in TASK_COLUMNS:
            raise ValueError(f"SparsebertPredictor runs the tasks {', '.join(TASK_COLUMNS)}; got {task!r}")
        refused = [name for name in _NOT_PER_ROW.get(task, ()) if name in options]
        if refused:
            raise ValueError(f"{task} in a dataset gives one result per row: {', '.join(refused)} is not taken")
        if isinstance(pipeline_batch_size, bool) or not isinstance(pipeline_batch_size, int) \
                or pipeline_batch_size < 1:
            raise ValueError(f"pipeline_batch_size must be a positive integer, got {pipeline_batch_size!r}")
        reads, writes = TASK_COLUMNS[task]
        if task == "feature-extraction" and options.get("pooling") is None:
            writes = ("last_hidden_state",)
        if task == "text-classification" and options.get("top_k", 1) != 1:
            writes = ("labels", "scores")
        columns = dict(columns or {})
        unknown = sorted(set(columns) - set(reads) - set(writes))
        if unknown:
            raise ValueError(f"columns= renames the columns {task} reads and writes ({', '.join(reads + writes)}); "
                             f"got {', '.join(map(repr, unknown))}")
        self.task = task
        self.reads = tuple(columns.get(name, name) for name in reads)
        self.writes = {name: columns.get(name, name) for name in writes}
        self.options = options
        self.pipeline_batch_size = pipeline_batch_size
        threads = num_threads if num_threads is not None else _ray_cpus()
        self.pipeline = pipeline(task, model, tokenizer=tokenizer, num_threads=threads, isa=isa)

    def __call__(self, batch: Any) -> Any:
        table = _Batch(batch)
        taken = [name for name in self.writes.values() if name in table.columns]
        if taken:
            raise ValueError(f"the batch already has the column(s) {', '.join(map(repr, taken))}, which "
                             f"{self.task} writes: name its outputs otherwise with columns=")
        inputs = [table.strings(name) for name in self.reads]
        outputs = self._outputs(inputs, table.rows)
        return table.with_columns({self.writes[name]: values for name, values in outputs.items()})

    def _outputs(self, inputs: list[list[str]], rows: int) -> dict[str, Any]:
        """The output columns (by their default names) of the rows whose input columns are ``inputs``."""
        task, pipe, options, size = self.task, self.pipeline, self.options, self.pipeline_batch_size
        if task == "question-answering":
            items = [{"question": q, "context": c} for q, c in zip(*inputs)]
            answers = pipe(items, batch_size=size, **options) if items else []
            return {key: [a[key] for a in answers] for key in ("answer", "score", "start", "end")}
        if task == "rerank":
            pairs = list(zip(*inputs))
            scores = np.zeros(rows, dtype=np.float64)
            for start, chunk in _by_length(pairs, size):
                for entry in pipe(chunk, batch_size=size, **options):  # ranked: put each back in its row
                    scores[start[entry["index"]]] = entry["score"]
            return {"score": scores}
        results: list[Any] = [None] * rows
        for start, chunk in _by_length(inputs[0], size):
            for row, result in zip(start, pipe(chunk, batch_size=size, **options)):
                results[row] = result
        if task == "text-classification":
            if "labels" in self.writes:
                return {"labels": [[r["label"] for r in ranked] for ranked in results],
                        "scores": [[r["score"] for r in ranked] for ranked in results]}
            return {"label": [r["label"] for r in results], "score": np.array([r["score"] for r in results])}
        if task == "token-classification":
            return {"entities": results}
        if "last_hidden_state" in self.writes:
            return {"last_hidden_state": results}
        width = self.pipeline.engine.config["hidden_size"]
        return {"embedding": np.stack(results) if results else np.zeros((0, width), dtype=np.float32)}


def _by_length(items: list[Any], size: int) -> list[tuple[list[int], list[Any]]]:
    """``items`` cut into chunks of ``size`` in order of their length (so padding is small), each chunk with the
    rows its items came from."""
    length: Callable[[Any], int] = (lambda item: len(item)) if not items or isinstance(items[0], str) \
        else (lambda pair: len(pair[0]) + len(pair[1]))
    order = sorted(range(len(items)), key=lambda i: length(items[i]))
    chunks = [order[start:start + size] for start in range(0, len(order), size)]
    return [(rows, [items[i] for i in rows]) for rows in chunks]


class _Batch:
    """A Ray Data batch, a dict of numpy arrays or a pandas DataFrame, read and extended the same way."""

    def __init__(self, batch: Any):
        self.batch = batch
        if isinstance(batch, Mapping):
            self.frame = False
            self.columns = list(batch)
            self.rows = len(next(iter(batch.values()))) if batch else 0
        elif hasattr(batch, "assign") and hasattr(batch, "columns"):  # pandas, duck-typed: no pandas import
            self.frame = True
            self.columns = [str(c) for c in batch.columns]
            self.rows = len(batch)
        else:
            raise TypeError("SparsebertPredictor takes a batch as a dict of numpy arrays or a pandas DataFrame "
                            f"(map_batches(..., batch_format='numpy' or 'pandas')), got {type(batch).__name__}")

    def strings(self, name: str) -> list[str]:
        if name not in self.columns:
            raise ValueError(f"the batch has no column {name!r} (its columns: {', '.join(map(repr, self.columns))});"
                             " name the dataset's with columns=")
        values = self.batch[name]
        values = values.tolist() if hasattr(values, "tolist") else list(values)
        bad = next((i for i, v in enumerate(values) if not isinstance(v, str)), None)
        if bad is not None:
            raise TypeError(f"column {name!r} must hold strings; row {bad} of the batch holds "
                            f"{type(values[bad]).__name__}")
        return values

    def with_columns(self, new: dict[str, Any]) -> Any:
        if self.frame:  # a column per row: pandas keeps arrays and lists as cells
            return self.batch.assign(**{name: _cells(values) for name, values in new.items()})
        out = dict(self.batch)
        for name, values in new.items():
            out[name] = values if isinstance(values, np.ndarray) else _column(values)
        return out


def _column(values: list[Any]) -> np.ndarray:
    """A numpy column of ``values``: numbers and strings as such, anything else (arrays of different shapes, lists)
    one object per row, never merged into a wider array."""
    if values and all(isinstance(v, (int, float, str)) for v in values):
        return np.array(values)
    column = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        column[i] = value
    return column


def _cells(values: Any) -> list[Any]:
    return list(values) if isinstance(values, np.ndarray) else values


__all__ = ["SparsebertPredictor", "TASK_COLUMNS"]
