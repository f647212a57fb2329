"""Scale-out on Ray Serve: the server of ``sparsebert serve`` (``create_app``) as a Ray Serve deployment of N
replicas behind Ray Serve's HTTP proxy, with its routing and, when asked, its autoscaling. Each replica builds the
app itself and loads the models once; dynamic batching runs inside each replica, as in a single server.

    from ray import serve
    from sparsebert.serve.ray import build_app
    serve.run(build_app({"minilm": "/models/minilm.sbert"}, num_replicas=2))

or from a Ray Serve config file (``serve run examples/ray_serve.yaml``) whose application has
``import_path: sparsebert.serve.ray:app_builder`` and ``args: {models: {NAME: PATH}, settings: {...}}``; or
``sparsebert serve MODEL.sbert --ray --replicas N`` (``run``). Model paths are read by the replicas: on a cluster of
several machines, each must find the files at that path. Each response names the replica that answered in its
``x-sparsebert-replica`` header.

Ray is the optional extra ``sparsebert[ray]``, imported when a function here is called, so this module imports
without it.
"""

from __future__ import annotations

import dataclasses
import os
import signal
from collections.abc import Callable, Mapping
from typing import Any

from ..extras import require
from . import ServeSettings, create_app

APP = "sparsebert"  # the application's name on the cluster (sparsebert serve --ray)
DEPLOYMENT = "SparsebertServer"
REPLICA_HEADER = "x-sparsebert-replica"
PURPOSE = "the Ray Serve deployment"


class ReplicaHeader:
    """ASGI middleware adding ``REPLICA_HEADER: replica`` to every HTTP response: behind Ray's proxy, which
    replica served a request is otherwise invisible (load spreading, debugging a replica)."""

    def __init__(self, app: Any, replica: str):
        self.app = app
        self.header = (REPLICA_HEADER.encode("latin-1"), replica.encode("latin-1"))

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_named(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.header]}
            await send(message)

        await self.app(scope, receive, send_named)


class SparsebertServer:
    """The replica class Ray Serve instantiates (wrapped by ``serve.ingress``); the app does all the work."""


def build_app(models: Mapping[str, str | os.PathLike], settings: ServeSettings | None = None, *,
              num_replicas: int | None = 1, autoscaling_config: Mapping[str, Any] | None = None,
              ray_actor_options: Mapping[str, Any] | None = None, max_ongoing_requests: int | None = None,
              max_queued_requests: int | None = None) -> Any:
    """A Ray Serve application (``serve.run`` it) serving ``models`` ({name: .sbert path}, as ``create_app``) with
    ``settings`` on ``num_replicas`` replicas, or, given ``autoscaling_config`` (Ray Serve's: ``min_replicas``,
    ``max_replicas``, ``target_ongoing_requests``, ...), on as many as Ray Serve's autoscaler decides.
    ``ray_actor_options`` reserve each replica's resources (e.g. ``{"num_cpus": 4}``): without
    ``settings.num_threads``, the engines take as many threads as CPUs are reserved (Ray's default: 1), not all the
    machine's; with it, that many CPUs are reserved unless ``ray_actor_options`` say otherwise.

    ``max_ongoing_requests`` (requests a replica holds at once) defaults to what the replica admits itself
    (``settings.max_queue`` per model), since Ray Serve's own default (5) would leave dynamic batching almost
    nothing to merge; ``max_queued_requests`` (requests waiting in Ray Serve for a replica) defaults to
    ``settings.max_queue``, beyond which Ray Serve answers 503, so no queue grows without bound."""
    serve = require("ray.serve", PURPOSE)
    if not isinstance(models, Mapping) or not models:
        raise ValueError("build_app needs models as a non-empty {name: path} mapping")
    if autoscaling_config is not None:
        num_replicas = None  # Ray Serve refuses both; the autoscaler owns the count
    elif isinstance(num_replicas, bool) or not isinstance(num_replicas, int) or num_replicas < 1:
        raise ValueError(f"num_replicas must be a positive integer, got {num_replicas!r}")
    paths = {str(name): os.fspath(path) for name, path in models.items()}
    settings = settings or ServeSettings()
    actor = dict(ray_actor_options or {})
    if settings.num_threads is None:  # replicas sharing a machine must not each take all its CPUs
        settings = dataclasses.replace(settings, num_threads=max(1, int(actor.get("num_cpus", 1))))
    actor.setdefault("num_cpus", settings.num_threads)
    admitted = settings.max_queue

    def replica_app() -> Any:  # run by Ray Serve in each replica, when it starts
        app = create_app(paths, settings)
        app.add_middleware(ReplicaHeader, replica=_replica_name(serve))
        return app

    options: dict[str, Any] = {
        "name": DEPLOYMENT,
        "max_ongoing_requests": admitted * len(paths) if max_ongoing_requests is None else max_ongoing_requests,
        "max_queued_requests": admitted if max_queued_requests is None else max_queued_requests,
        "ray_actor_options": actor}
    if autoscaling_config is not None:
        options["autoscaling_config"] = dict(autoscaling_config)
    else:
        options["num_replicas"] = num_replicas
    deployment = serve.deployment(serve.ingress(replica_app)(SparsebertServer))
    return deployment.options(**options).bind()


def app_builder(args: Mapping[str, Any]) -> Any:
    """``build_app`` from a Ray Serve config file's ``args`` (or ``serve run ...:app_builder``): ``models``
    ({name: path}), ``settings`` (ServeSettings' fields) and build_app's keyword arguments. The config's
    ``deployments:`` entry named SparsebertServer may set the deployment's options instead."""
    args = dict(args)
    known = {"models", "settings", "num_replicas", "autoscaling_config", "ray_actor_options", "max_ongoing_requests",
             "max_queued_requests"}
    unknown = sorted(set(args) - known)
    if unknown:
        raise ValueError(f"unknown args {', '.join(unknown)}; sparsebert's Ray Serve app takes "
                         f"{', '.join(sorted(known))}")
    if "models" not in args:
        raise ValueError("args needs models: {name: path to a .sbert file, ...}")
    settings = settings_from(args.pop("settings", None) or {})
    return build_app(args.pop("models"), settings, **args)


def settings_from(fields: Mapping[str, Any]) -> ServeSettings:
    """ServeSettings from a mapping of its fields (a config file's), a ValueError naming unknown ones."""
    names = {field.name for field in dataclasses.fields(ServeSettings)}
    unknown = sorted(set(fields) - names)
    if unknown:
        raise ValueError(f"unknown settings {', '.join(unknown)}; ServeSettings has {', '.join(sorted(names))}")
    return ServeSettings(**fields)


def run(models: Mapping[str, str | os.PathLike], settings: ServeSettings | None = None, *, host: str = "127.0.0.1",
        port: int = 8080, num_replicas: int = 1, address: str | None = None) -> int:
    """``sparsebert serve --ray``: join the Ray cluster at ``address`` (default: RAY_ADDRESS's, or this machine's
    latest, or a new one), serve ``models`` there as the application APP on ``num_replicas`` replicas behind Ray
    Serve's proxy at host:port until SIGINT or SIGTERM, then delete the application (its replicas finish their
    admitted requests first), and Serve itself when no other application is left. Returns 0."""
    if not port:
        raise ValueError("Ray Serve's proxy needs a port number (not 0)")
    ray = require("ray", PURPOSE)
    serve = require("ray.serve", PURPOSE)
    app = build_app(models, settings, num_replicas=num_replicas)
    ray.init(address=address)
    # Stop as on Ctrl-C, through the finally below (set after ray.init, whose own handler would abort the process).
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run(app, name=APP, route_prefix="/")
        print(f"sparsebert serve: {num_replicas} replica(s) on Ray Serve at http://{host}:{port}", flush=True)
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        serve.delete(APP)
        if not serve.status().applications:
            serve.shutdown()
        ray.shutdown()
    return 0


def _replica_name(serve: Any) -> str:
    """This replica's id as Ray Serve names it."""
    context = serve.get_replica_context()
    replica = getattr(context, "replica_id", None)
    return str(getattr(replica, "unique_id", None) or getattr(context, "replica_tag", "unknown"))


__all__ = ["APP", "DEPLOYMENT", "REPLICA_HEADER", "ReplicaHeader", "app_builder", "build_app", "run", "settings_from"]
