"""Run the app on uvicorn: ``run_server(models, settings, host, port)``. The socket is bound here, so port 0 picks a
free port and the line ``sparsebert serve: listening on http://HOST:PORT`` (standard error) names it. SIGTERM and
SIGINT stop accepting, let every admitted request finish, then return (exit status 0 from the command line)."""

from __future__ import annotations

import os
import signal
import socket
import sys
from collections.abc import Mapping
from typing import Any, Optional

from ..errors import SparseBertError
from ..extras import require
from .app import create_app
from .metrics import PURPOSE
from .settings import ServeSettings


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(2048)
    return sock


def run_server(models: Mapping[str, str | os.PathLike], settings: Optional[ServeSettings] = None,
               host: str = "127.0.0.1", port: int = 8080, log_level: str = "info") -> None:
    uvicorn = require("uvicorn", PURPOSE)
    app = create_app(models, settings)
    sock = bind(host, port)
    config = uvicorn.Config(app, log_level=log_level, lifespan="on", timeout_graceful_shutdown=None)
    server = uvicorn.Server(config)
    bound = sock.getsockname()
    print(f"sparsebert serve: listening on http://{_url_host(bound[0])}:{bound[1]}", file=sys.stderr, flush=True)
    # uvicorn re-raises the signal that stopped it once it has shut down gracefully; a handler of our own in place
    # then keeps the process alive to exit normally.
    previous = signal.signal(signal.SIGTERM, _stopped)
    try:
        server.run(sockets=[sock])
    finally:
        signal.signal(signal.SIGTERM, previous)
        sock.close()
    if not server.started:
        raise SparseBertError("the server did not start (see the log above)")


def _stopped(signum: int, frame: Any) -> None:
    pass


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


__all__ = ["bind", "run_server"]
