"""``create_app(models, settings)``: the FastAPI app. Models load when the app starts (its lifespan) and their
batchers stop when it shuts down, after finishing every request admitted. Routes are plain functions of the
request (``*_routes.py``) returning JSON-able answers; failures are ``ServeError``s rendered in the route family's
shape. Needs the ``serve`` extra (FastAPI)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
from collections.abc import AsyncIterator, Mapping
from typing import Any, Optional

from ..extras import require
from . import info_routes, openai_routes, task_routes, tei_routes
from .errors import NOT_FOUND, UNHEALTHY, ServeError, error_body
from .guard import Guard
from .metrics import PURPOSE, ServeMetrics
from .registry import Registry, load_models
from .settings import ServeSettings

ROUTES = [*openai_routes.ROUTES, *tei_routes.ROUTES, *task_routes.ROUTES, *info_routes.ROUTES]
METRICS_PATH = "/metrics"
_log = logging.getLogger("sparsebert.serve")


@dataclasses.dataclass
class ServingState:
    """What the routes read: ``request.app.state.serving``."""

    settings: ServeSettings
    metrics: ServeMetrics
    registry: Optional[Registry] = None


def create_app(models: Mapping[str, str | os.PathLike], settings: Optional[ServeSettings] = None) -> Any:
    """The ASGI app serving ``models`` (name -> packed .sbert path) with ``settings`` (default ``ServeSettings()``)."""
    fastapi = require("fastapi", PURPOSE)
    responses = require("fastapi.responses", PURPOSE)
    settings = ServeSettings() if settings is None else settings
    if not isinstance(settings, ServeSettings):
        raise TypeError(f"settings must be a ServeSettings, got {type(settings).__name__}")
    models = dict(models)
    state = ServingState(settings, ServeMetrics())

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        registry = await asyncio.to_thread(load_models, models, settings, state.metrics)
        for model in registry.models.values():
            model.start()
        state.registry = registry
        try:
            yield
        finally:  # the server has stopped accepting and answered what it admitted; the batchers drain anyway
            for model in registry.models.values():
                await model.stop()

    app = fastapi.FastAPI(title="sparsebert", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.serving = state

    def endpoint(handler: Any) -> Any:
        async def call(request: Any) -> Any:
            if state.registry is None:
                raise ServeError(503, "the models are still loading", UNHEALTHY, headers={"Retry-After": "1"})
            return responses.JSONResponse(await handler(request, state))
        return call

    for path, method, handler in ROUTES:
        app.add_route(path, endpoint(handler), methods=[method])

    async def metrics(request: Any) -> Any:
        text, content_type = state.metrics.render()
        return responses.Response(text, media_type=content_type)
    app.add_route(METRICS_PATH, metrics, methods=["GET"])

    async def refused(request: Any, exc: ServeError) -> Any:
        return responses.JSONResponse(error_body(request.url.path, exc), status_code=exc.status, headers=exc.headers)

    async def not_routed(request: Any, exc: Any) -> Any:
        status = getattr(exc, "status_code", 404)
        message = f"no route {request.method} {request.url.path}" if status in (404, 405) else str(exc)
        return await refused(request, ServeError(status, message, NOT_FOUND))

    async def failed(request: Any, exc: Exception) -> Any:
        _log.exception("request to %s failed", request.url.path)
        return await refused(request, ServeError(500, f"internal error: {type(exc).__name__}", "Backend"))

    app.add_exception_handler(ServeError, refused)
    app.add_exception_handler(404, not_routed)
    app.add_exception_handler(405, not_routed)
    app.add_exception_handler(Exception, failed)
    endpoints = frozenset([path for path, _, _ in ROUTES] + [METRICS_PATH])
    app.add_middleware(Guard, settings=settings, metrics=state.metrics, endpoints=endpoints)
    return app


__all__ = ["ROUTES", "ServingState", "create_app"]
