"""``GET /health`` (no key needed: load balancers probe it), ``GET /info`` (text-embeddings-inference's fields
for the first model, and every model under ``models``) and ``GET /metrics`` (Prometheus text)."""

from __future__ import annotations

from typing import Any

from .._version import __version__
from .registry import CLASSIFIER, EMBEDDING, RERANKER


def model_info(model: Any, settings: Any) -> dict[str, Any]:
    config = model.config
    labels = {str(k): v for k, v in (config.get("id2label") or {}).items()}
    if model.kind == EMBEDDING:
        model_type: dict[str, Any] = {"embedding": {"pooling": model.pooling}}
    elif model.kind in (CLASSIFIER, RERANKER):
        model_type = {"reranker" if model.kind == RERANKER else "classifier":
                      {"id2label": labels, "label2id": {v: int(k) for k, v in labels.items()}}}
    else:
        model_type = {model.kind: {"id2label": labels}}
    int8 = any(row.get("layout") == "block4_int8" for row in model.pipeline.engine.linears)
    return {"model_id": model.name, "model_sha": None, "model_dtype": "int8" if int8 else "float32",
            "model_type": model_type, "max_concurrent_requests": settings.max_queue,
            "max_input_length": model.max_input_length, "max_batch_tokens": settings.max_batch_tokens,
            "max_batch_requests": None, "max_client_batch_size": settings.max_inputs_per_request,
            "auto_truncate": False, "tokenization_workers": 1, "version": __version__, "sha": None,
            "docker_label": None, "attention": model.pipeline.engine.attention}


async def info(request: Any, state: Any) -> dict[str, Any]:
    served = [model_info(model, state.settings) for model in state.registry.models.values()]
    return {**served[0], "models": served}


async def health(request: Any, state: Any) -> dict[str, Any]:
    return {"status": "ok"}


ROUTES = [("/info", "GET", info), ("/health", "GET", health)]

__all__ = ["ROUTES", "model_info"]
