"""What every request passes before a route sees it, as one ASGI middleware: the bearer key (every path but
``/health``; compared in constant time), the body size (``Content-Length`` and the bytes actually streamed, read
at most ``max_request_bytes`` + 1 of them), and the request's count and latency in the metrics (by route; other
paths count as "other", so random URLs cannot grow the metrics)."""

from __future__ import annotations

import hmac
import json
import time
from typing import Any, Optional

from .errors import UNAUTHORIZED, VALIDATION, ServeError, error_body
from .metrics import ServeMetrics
from .settings import ServeSettings

OPEN_PATHS = frozenset({"/health"})


def check_key(headers: dict[bytes, bytes], api_key: Optional[str]) -> Optional[ServeError]:
    """None when the request may pass, else the 401 to answer."""
    if api_key is None:
        return None
    scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), api_key.encode()):
        return None
    return ServeError(401, "a valid API key is required: send the header 'Authorization: Bearer <key>'",
                      UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})


class Guard:
    def __init__(self, app: Any, settings: ServeSettings, metrics: ServeMetrics, endpoints: frozenset[str]):
        self.app = app
        self.settings = settings
        self.metrics = metrics
        self.endpoints = endpoints

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path = scope["path"]
        status = [500]  # what a failure before any response counts as

        async def send_counted(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            headers = dict(scope["headers"])
            error = None if path in OPEN_PATHS else check_key(headers, self.settings.api_key)
            body = b""
            if error is None:
                body, error = await self._read_body(headers, receive)
            if error is not None:
                await _send_error(send_counted, path, error)
                return
            await self.app(scope, _replay(body, receive), send_counted)
        finally:
            self.metrics.request_done(path if path in self.endpoints else "other", status[0],
                                      time.perf_counter() - started)

    async def _read_body(self, headers: dict[bytes, bytes], receive: Any) -> tuple[bytes, Optional[ServeError]]:
        limit = self.settings.max_request_bytes
        too_large = ServeError(413, f"the request body is larger than {limit} bytes (--max-request-bytes)",
                               VALIDATION)
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return b"", too_large if declared.isdigit() else ServeError(400, "a bad Content-Length", VALIDATION)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b"", ServeError(400, "the client went away", VALIDATION)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return b"", too_large
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), None


def _replay(body: bytes, receive: Any) -> Any:
    """A receive() that gives the body already read, then whatever comes next (a disconnect)."""
    given = [False]

    async def replayed() -> dict[str, Any]:
        if not given[0]:
            given[0] = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()
    return replayed


async def _send_error(send: Any, path: str, error: ServeError) -> None:
    payload = json.dumps(error_body(path, error)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    if error.status == 413:
        headers.append((b"connection", b"close"))  # the rest of the body is not read
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


__all__ = ["Guard", "OPEN_PATHS", "check_key"]
