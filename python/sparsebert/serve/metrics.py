"""The server's Prometheus metrics (``GET /metrics``), in a registry of the app's own so that several apps in one
process (tests, Ray replicas) keep separate counts. Tokens per second is ``rate(sparsebert_tokens_total[1m])``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..extras import require
from .batcher import BatchStats

PURPOSE = "sparsebert serve"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
TOKEN_BUCKETS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)


class ServeMetrics:
    """The metrics one app reports; ``render()`` gives the exposition text and its content type."""

    def __init__(self) -> None:
        prometheus = require("prometheus_client", PURPOSE)
        self._prometheus = prometheus
        self.registry = prometheus.CollectorRegistry()
        on = {"registry": self.registry}
        self.requests = prometheus.Counter("sparsebert_requests", "HTTP requests by endpoint and status code",
                                           ["endpoint", "status"], **on)
        self.request_seconds = prometheus.Histogram(
            "sparsebert_request_duration_seconds", "Time from a request's arrival to its response, by endpoint",
            ["endpoint"], buckets=LATENCY_BUCKETS, **on)
        self.queue_seconds = prometheus.Histogram(
            "sparsebert_queue_duration_seconds", "Time a request's inputs waited for the engine", ["model"],
            buckets=LATENCY_BUCKETS, **on)
        self.inference_seconds = prometheus.Histogram(
            "sparsebert_inference_duration_seconds", "Time of one engine batch", ["model"], buckets=LATENCY_BUCKETS,
            **on)
        self.batch_size = prometheus.Histogram("sparsebert_batch_size", "Sequences per engine batch", ["model"],
                                               buckets=SIZE_BUCKETS, **on)
        self.batch_tokens = prometheus.Histogram("sparsebert_batch_tokens",
                                                 "Tokens per engine batch (without padding)", ["model"],
                                                 buckets=TOKEN_BUCKETS, **on)
        self.queue_depth = prometheus.Gauge("sparsebert_queue_depth", "Requests waiting for the engine", ["model"],
                                            **on)
        self.in_flight = prometheus.Gauge("sparsebert_requests_in_flight",
                                          "Requests admitted and not yet answered (waiting or computing)",
                                          ["model"], **on)
        self.tokens = prometheus.Counter("sparsebert_tokens", "Tokens computed (rate() of it is tokens/s)",
                                         ["model"], **on)

    def watch_queue(self, model: str, depth: Callable[[], int]) -> None:
        self.queue_depth.labels(model).set_function(depth)

    def batch_reporter(self, model: str) -> Callable[[BatchStats], None]:
        size, tokens = self.batch_size.labels(model), self.batch_tokens.labels(model)
        seconds, total = self.inference_seconds.labels(model), self.tokens.labels(model)

        def report(stats: BatchStats) -> None:
            size.observe(stats.sequences)
            tokens.observe(stats.tokens)
            seconds.observe(stats.seconds)
            total.inc(stats.tokens)
        return report

    def queue_reporter(self, model: str) -> Callable[[float], None]:
        return self.queue_seconds.labels(model).observe

    def render(self) -> tuple[bytes, str]:
        return self._prometheus.generate_latest(self.registry), self._prometheus.CONTENT_TYPE_LATEST

    def request_done(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        self.request_seconds.labels(endpoint).observe(seconds)

    def gauge_in_flight(self, model: str) -> Any:
        return self.in_flight.labels(model)


__all__ = ["PURPOSE", "ServeMetrics"]
