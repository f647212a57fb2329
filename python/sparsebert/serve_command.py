"""``sparsebert serve``: the HTTP server (``sparsebert.serve``) on one or several packed models. The models are
checked before the server starts, so a bad file is a one-line error rather than a failed startup."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from .cli_args import bounded, positive_int, thread_count
from .engine import ATTENTION_PRECISIONS, ATTENTION_VARIABLE, attention_precision, bf16_attention_unavailable
from .serve import API_KEY_ENV, ServeSettings, run_server, served_task
from .serve import ray as serve_ray

EXIT_OK = 0
DEFAULTS = ServeSettings()
_port = bounded(int, 0, 65535, what="a port number")
_wait_ms = bounded(float, 0.0, what="a number of milliseconds")


def _named_model(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name.strip() or not path:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=PATH")
    return name.strip(), path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", nargs="?", default=None,
                   help="a packed .sbert file, served under its file name without .sbert")
    p.add_argument("--model", dest="named", type=_named_model, action="append", default=[], metavar="NAME=PATH",
                   help="another model, served as NAME (repeatable)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=_port, default=8080, help="port (default 8080; 0 picks a free one)")
    p.add_argument("--max-batch-tokens", type=positive_int, default=DEFAULTS.max_batch_tokens, metavar="N",
                   help=f"tokens per engine batch, padding included (default {DEFAULTS.max_batch_tokens})")
    p.add_argument("--max-wait-ms", type=_wait_ms, default=DEFAULTS.max_wait_ms, metavar="MS",
                   help=f"how long a request waits for others to batch with (default {DEFAULTS.max_wait_ms:g})")
    p.add_argument("--no-batching", dest="batching", action="store_false",
                   help="run every request as its own engine call (no dynamic batching)")
    p.add_argument("--max-queue", type=positive_int, default=DEFAULTS.max_queue, metavar="N",
                   help=f"requests admitted per model before answering 429 (default {DEFAULTS.max_queue})")
    p.add_argument("--max-request-bytes", type=positive_int, default=DEFAULTS.max_request_bytes, metavar="N",
                   help=f"largest request body (default {DEFAULTS.max_request_bytes})")
    p.add_argument("--max-inputs-per-request", type=positive_int, default=DEFAULTS.max_inputs_per_request,
                   metavar="N", help=f"inputs one request may carry (default {DEFAULTS.max_inputs_per_request})")
    p.add_argument("--api-key", default=None, metavar="KEY",
                   help=f"require 'Authorization: Bearer KEY' on every endpoint but /health (default: "
                        f"${API_KEY_ENV}, if set)")
    p.add_argument("--threads", type=thread_count, default=None, help="engine threads per model (default: CPUs)")
    p.add_argument("--attention", choices=ATTENTION_PRECISIONS, default=None,
                   help="precision of attention's products: bf16 is faster and less precise, and needs AMX "
                        "(default: $SPARSEBERT_ATTENTION, else fp32)")
    p.add_argument("--ray", action="store_true",
                   help='serve as a Ray Serve deployment behind its proxy at --host:--port (pip install '
                        '"sparsebert[ray]"); each replica reserves --threads CPUs (default 1)')
    p.add_argument("--replicas", type=positive_int, default=None, metavar="N", help="with --ray: replicas (default 1)")
    p.add_argument("--ray-address", default=None, metavar="ADDRESS",
                   help="with --ray: join this Ray cluster (default: $RAY_ADDRESS, else start one on this machine)")


def run(args: argparse.Namespace) -> int:
    models = {}
    if args.model is not None:
        models[Path(args.model).stem] = args.model
    for name, path in args.named:
        if name in models:
            raise ValueError(f"two models are named {name!r}: give each --model its own NAME")
        models[name] = path
    if not models:
        raise ValueError("name a model to serve: sparsebert serve MODEL.sbert (or --model NAME=PATH)")
    for path in models.values():
        served_task(path)  # the file's own problems, as one line, before anything starts
    api_key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV) or None
    # --attention, else SPARSEBERT_ATTENTION: refused here, in one line, rather than by the first model's load.
    why_not = bf16_attention_unavailable() if attention_precision(args.attention) == "bf16" else None
    if why_not:
        raise ValueError(f"{'--attention bf16' if args.attention else ATTENTION_VARIABLE + '=bf16'}: {why_not}")
    settings = ServeSettings(max_batch_tokens=args.max_batch_tokens, max_wait_ms=args.max_wait_ms,
                             batching=args.batching, max_queue=args.max_queue,
                             max_request_bytes=args.max_request_bytes,
                             max_inputs_per_request=args.max_inputs_per_request, api_key=api_key,
                             num_threads=args.threads, attention=args.attention)
    if args.ray:
        return serve_ray.run(models, settings, host=args.host, port=args.port, num_replicas=args.replicas or 1,
                             address=args.ray_address)
    if args.replicas is not None or args.ray_address is not None:
        raise ValueError("--replicas and --ray-address go with --ray")
    run_server(models, settings, host=args.host, port=args.port)
    return EXIT_OK
