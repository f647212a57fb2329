"""The models a server holds, by name: each a pipeline (engine + tokenizer), what it serves (from its head), its
batcher, its tokenizer thread and its admission count. Requests name models; a name is only ever looked up here,
never used as a path."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Optional

from ..format import read_model
from ..pipelines import Pipeline, pipeline
from ..rerank import check_rerank_model
from .batcher import Batcher
from .errors import NOT_FOUND, OVERLOADED, VALIDATION, ServeError
from .metrics import ServeMetrics
from .settings import ServeSettings

# What a model serves, from its head: the pipeline task it runs and its kind (the routes it answers).
EMBEDDING, CLASSIFIER, RERANKER, TOKEN_CLASSIFIER, QUESTION_ANSWERING = (
    "embedding", "classifier", "reranker", "token-classifier", "question-answering")
_TASK_OF_HEAD = {"none": "feature-extraction", "sequence_classification": "text-classification",
                 "token_classification": "token-classification", "question_answering": "question-answering"}
# Route capability -> the kinds that have it.
CAPABLE = {"embed": {EMBEDDING}, "predict": {CLASSIFIER, RERANKER}, "rerank": {RERANKER},
           "token-classification": {TOKEN_CLASSIFIER}, "question-answering": {QUESTION_ANSWERING}}


def served_task(path: str | os.PathLike) -> tuple[str, str]:
    """(pipeline task, kind) of the packed model at ``path``; ValueError for a model the server cannot serve."""
    model = read_model(path, verify_crc=False)
    config = model.config
    head = config["head"]
    if head not in _TASK_OF_HEAD:
        raise ValueError(f"{os.fspath(path)}: a model with head {head!r} is not served (fill-mask runs with "
                         "sparsebert.pipeline)")
    if model.header.get("tokenizer") is None:
        raise ValueError(f"{os.fspath(path)} carries no tokenizer: export it with one to serve it")
    task = _TASK_OF_HEAD[head]
    if head == "none":
        return ("sentence-embedding" if config.get("sentence_pooling") else task), EMBEDDING
    if head == "sequence_classification":
        try:
            check_rerank_model(config, path)
            return task, RERANKER
        except ValueError:
            return task, CLASSIFIER
    return task, TOKEN_CLASSIFIER if head == "token_classification" else QUESTION_ANSWERING


class ServedModel:
    """One model of the server."""

    def __init__(self, name: str, path: str | os.PathLike, settings: ServeSettings, metrics: ServeMetrics):
        self.name = name
        self.path = os.fspath(path)
        task, self.kind = served_task(path)
        self.pipeline: Pipeline = pipeline(task, path, num_threads=settings.num_threads,
                                            attention=settings.attention)
        config = self.pipeline.engine.config
        self.config = config
        # Embeddings: the sentence-transformers recipe the file records, else mean pooling.
        self.pooling = config.get("sentence_pooling") or "mean"
        self.normalize = bool(config.get("sentence_normalize", False))
        self.max_input_length = self.pipeline.max_length
        self._max_queue = settings.max_queue
        self._retry_after = settings.retry_after_s
        self._admitted = 0
        self._in_flight = metrics.gauge_in_flight(name)
        # The tokenizer is not thread-safe (encoding sets its truncation): one thread per model tokenizes.
        self._tokenizer_thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"sparsebert-tok-{name}")
        token_outputs = ["last_hidden_state", "start_logits", "end_logits"]
        if config["head"] == "token_classification":
            token_outputs.append("logits")
        self.batcher = Batcher(self._run_engine, token_outputs, max_batch_tokens=settings.max_batch_tokens,
                               max_wait_ms=settings.max_wait_ms, batching=settings.batching,
                               on_batch=metrics.batch_reporter(name), on_queue=metrics.queue_reporter(name))
        metrics.watch_queue(name, lambda: self.batcher.depth)

    def _run_engine(self, sequences: list[Any]) -> dict[str, Any]:
        return self.pipeline.engine.run(self.pipeline.arrays(sequences))

    async def on_tokenizer_thread(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``function(*args, **kwargs)`` on the model's tokenizer thread (whatever uses the tokenizer runs there)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._tokenizer_thread, lambda: function(*args, **kwargs))

    async def compute(self, encode: Callable[..., list[Any]], *args: Any) -> tuple[list[Any], dict[str, Any]]:
        """Admit a request, make its sequences with ``encode(*args)`` on the tokenizer thread, run them through the
        batcher: (sequences, the engine's outputs for them)."""
        async with self.admission():
            sequences = await self.on_tokenizer_thread(encode, *args)
            return sequences, await self.batcher.submit(sequences)

    @contextlib.asynccontextmanager
    async def admission(self) -> AsyncIterator[None]:
        """Admit a request for the length of the block, or refuse it (429) when ``max_queue`` are in already."""
        if self._admitted >= self._max_queue:
            raise ServeError(429, f"model {self.name!r} has {self._admitted} requests in progress, its limit "
                                  "(--max-queue); retry later", OVERLOADED,
                             headers={"Retry-After": str(self._retry_after)})
        self._admitted += 1
        self._in_flight.inc()
        try:
            yield
        finally:
            self._admitted -= 1
            self._in_flight.dec()

    def start(self) -> None:
        self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop()
        self._tokenizer_thread.shutdown(wait=True)


class Registry:
    """The served models by name, in the order given."""

    def __init__(self, models: Mapping[str, ServedModel]):
        self.models = dict(models)

    def find(self, name: Optional[str], capability: str, route: str) -> ServedModel:
        """The model ``name`` names, which must have ``capability`` (a key of CAPABLE); without a name, the one
        model that has it."""
        kinds = CAPABLE[capability]
        if name is not None:
            model = self.models.get(name)
            if model is None:
                raise ServeError(404, f"the model {name!r} is not served here; served: "
                                      f"{', '.join(map(repr, self.models))}", NOT_FOUND, param="model")
            if model.kind not in kinds:
                raise ServeError(400, f"the model {name!r} is a {model.kind} model and does not serve {route}",
                                 VALIDATION, param="model")
            return model
        able = [m for m in self.models.values() if m.kind in kinds]
        if len(able) == 1:
            return able[0]
        if not able:
            raise ServeError(404, f"no model served here answers {route}", NOT_FOUND, param="model")
        raise ServeError(422, f"several models answer {route} ({', '.join(m.name for m in able)}): name one with "
                              "\"model\"", VALIDATION, param="model")


def load_models(models: Mapping[str, str | os.PathLike], settings: ServeSettings,
                metrics: ServeMetrics) -> Registry:
    if not models:
        raise ValueError("serve at least one model")
    for name in models:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"a model name must be a non-empty string, got {name!r}")
    return Registry({name: ServedModel(name, path, settings, metrics) for name, path in models.items()})


__all__ = ["CAPABLE", "EMBEDDING", "CLASSIFIER", "QUESTION_ANSWERING", "RERANKER", "TOKEN_CLASSIFIER", "Registry",
           "ServedModel", "load_models", "served_task"]
