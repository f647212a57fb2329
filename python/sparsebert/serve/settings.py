"""The server's tunables and limits, each with its one default: ``ServeSettings``. The command line builds it from
its flags and ``SPARSEBERT_API_KEY``; ``create_app`` and the Ray deployment take it as it is. Imports only the
standard library."""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

API_KEY_ENV = "SPARSEBERT_API_KEY"


@dataclasses.dataclass(frozen=True)
class ServeSettings:
    """How the server batches, what it admits, and who may call it.

    * ``max_batch_tokens``: concurrent requests of one model are merged into engine batches of at most this many
      tokens (padding included; a single input longer than that runs alone).
    * ``max_wait_ms``: how long the first request of a batch waits for others to join it.
    * ``batching``: False runs every request as its own engine call, in arrival order (the baseline that dynamic
      batching is measured against).
    * ``max_queue``: requests admitted per model (waiting or computing); more are refused with 429 and
      ``Retry-After: retry_after_s``, so memory stays bounded by ``max_queue`` x ``max_request_bytes``.
    * ``max_request_bytes``: a larger request body is refused with 413 (declared or streamed).
    * ``max_inputs_per_request``: texts (or token arrays, or pairs) one request may carry; more is 413.
    * ``api_key``: when set, every endpoint but ``/health`` needs ``Authorization: Bearer <key>``.
    * ``num_threads``: engine threads per model (default: the CPUs this process may use).
    * ``attention``: the precision of the engines' attention products, as ``SparseEngine.load``'s ``attention``
      (None: ``SPARSEBERT_ATTENTION``, else fp32).
    """

    max_batch_tokens: int = 4096
    max_wait_ms: float = 5.0
    batching: bool = True
    max_queue: int = 512
    max_request_bytes: int = 2 * 1024 * 1024
    max_inputs_per_request: int = 256
    api_key: Optional[str] = None
    num_threads: Optional[int] = None
    retry_after_s: int = 1
    attention: Optional[str] = None

    def __post_init__(self) -> None:
        for name in ("max_batch_tokens", "max_queue", "max_request_bytes", "max_inputs_per_request",
                     "retry_after_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        wait = self.max_wait_ms
        if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not math.isfinite(wait) or wait < 0:
            raise ValueError(f"max_wait_ms must be a finite number >= 0, got {wait!r}")
        if not isinstance(self.batching, bool):
            raise ValueError(f"batching must be True or False, got {self.batching!r}")
        if self.api_key is not None and (not isinstance(self.api_key, str) or not self.api_key.strip()):
            raise ValueError("api_key must be a non-empty string (or None for no authentication)")
        threads = self.num_threads
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"num_threads must be a positive integer or None, got {threads!r}")
        if self.attention is not None and not isinstance(self.attention, str):
            raise ValueError(f"attention must be a string or None, got {self.attention!r}")  # its values: the engine's


__all__ = ["API_KEY_ENV", "ServeSettings"]
