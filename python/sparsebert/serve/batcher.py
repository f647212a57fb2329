"""Dynamic batching for one model: requests' token sequences wait in a queue on the event loop; a batcher task
takes what has arrived (waiting at most ``max_wait_ms`` for more, up to ``max_batch_tokens``), sorts the sequences
by length so that each engine batch pads little, and runs the engine on a worker thread (the engine releases the
GIL, so the event loop keeps accepting). Each request gets back the rows of its own sequences, which do not depend
on their batch-mates. Imports numpy and the standard library only.

A request whose caller went away (a client that disconnected) is still computed and its result dropped: the
batcher never stalls on it. ``stop()`` finishes everything already submitted before it returns.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any, Optional

import numpy as np

Outputs = dict[str, np.ndarray]


@dataclasses.dataclass
class BatchStats:
    """What one engine call did, for the metrics."""

    sequences: int
    tokens: int  # real tokens, without padding
    seconds: float


@dataclasses.dataclass
class _Work:
    sequences: Sequence[Any]  # anything with ``ids`` (and ``type_ids``)
    future: asyncio.Future
    tokens: int
    enqueued: float


class Batcher:
    """``await submit(sequences)`` -> the engine's outputs for those sequences, row i for sequence i, token-level
    outputs (``token_outputs``) padded to the longest of them.

    ``run_engine(sequences) -> outputs`` runs one engine batch (on the batcher's thread); ``on_batch(stats)`` and
    ``on_queue(seconds)`` (a request's wait for the engine) report to the metrics."""

    def __init__(self, run_engine: Callable[[list[Any]], Outputs], token_outputs: Sequence[str], *,
                 max_batch_tokens: int, max_wait_ms: float, batching: bool = True,
                 on_batch: Callable[[BatchStats], None] = lambda stats: None,
                 on_queue: Callable[[float], None] = lambda seconds: None):
        self._run_engine = run_engine
        self._token_outputs = frozenset(token_outputs)
        self._max_tokens = max_batch_tokens
        self._max_wait = max_wait_ms / 1000.0
        self._batching = batching
        self._on_batch = on_batch
        self._on_queue = on_queue
        self._waiting: collections.deque[_Work] = collections.deque()
        self._arrived: Optional[asyncio.Event] = None
        self._task: Optional[asyncio.Task] = None
        self._stopping = False
        # One thread: the engine serialises its calls anyway, and a batch must not wait behind another's tokenizing.
        self._thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="sparsebert-batch")

    @property
    def depth(self) -> int:
        """Requests waiting for the engine."""
        return len(self._waiting)

    def start(self) -> None:
        self._arrived = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="sparsebert-batcher")

    async def stop(self) -> None:
        """Refuse new work, finish every submitted request, then release the thread."""
        self._stopping = True
        if self._task is not None:
            self._arrived.set()
            await self._task
        self._thread.shutdown(wait=True)

    async def submit(self, sequences: Sequence[Any]) -> Outputs:
        if self._stopping or self._task is None:
            raise RuntimeError("the batcher is not running")
        if not sequences:
            raise ValueError("nothing to run")
        future = asyncio.get_running_loop().create_future()
        tokens = sum(len(s.ids) for s in sequences)
        self._waiting.append(_Work(sequences, future, tokens, time.perf_counter()))
        self._arrived.set()
        # A caller cancelled here leaves the future to the batcher, which skips setting a cancelled one.
        return await future

    # ------------------------------------------------------------------------------------------ the loop

    async def _loop(self) -> None:
        while True:
            batch = await self._next_batch()
            if not batch:
                return
            await self._run(batch)

    async def _next_batch(self) -> list[_Work]:
        while not self._waiting:
            if self._stopping:
                return []
            self._arrived.clear()
            await self._arrived.wait()
        batch = [self._waiting.popleft()]
        tokens = batch[0].tokens
        deadline = time.perf_counter() + self._max_wait
        while self._batching and tokens < self._max_tokens:
            if self._waiting:
                if tokens + self._waiting[0].tokens > self._max_tokens:
                    break
                work = self._waiting.popleft()
                batch.append(work)
                tokens += work.tokens
                continue
            remaining = deadline - time.perf_counter()
            if remaining <= 0 or self._stopping:
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                break
        return batch

    async def _run(self, batch: list[_Work]) -> None:
        started = time.perf_counter()
        for work in batch:
            self._on_queue(started - work.enqueued)
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self._thread, self._compute, batch)
        except Exception as exc:  # noqa: BLE001 (each request gets its own failure, below)
            if len(batch) > 1:  # one bad request must not fail its batch-mates: run each alone
                for work in batch:
                    await self._run([work])
                return
            results = [exc]
        for work, result in zip(batch, results):
            if work.future.done():  # its caller went away
                continue
            if isinstance(result, BaseException):
                work.future.set_exception(result)
            else:
                work.future.set_result(result)

    def _compute(self, batch: list[_Work]) -> list[Outputs]:
        """On the batcher's thread: every sequence of ``batch`` through the engine, in batches of similar lengths,
        and each request's rows gathered back."""
        rows = [(w, s, len(seq.ids)) for w, work in enumerate(batch) for s, seq in enumerate(work.sequences)]
        rows.sort(key=lambda row: row[2])
        per_row: dict[tuple[int, int], dict[str, np.ndarray]] = {}
        for chunk in _chunks(rows, self._max_tokens if self._batching else None):
            sequences = [batch[w].sequences[s] for w, s, _ in chunk]
            began = time.perf_counter()
            out = self._run_engine(sequences)
            self._on_batch(BatchStats(len(chunk), sum(n for _, _, n in chunk), time.perf_counter() - began))
            for i, (w, s, n) in enumerate(chunk):
                per_row[w, s] = {name: (value[i, :n] if name in self._token_outputs else value[i])
                                 for name, value in out.items()}
        return [_stack([per_row[w, s] for s in range(len(work.sequences))], self._token_outputs)
                for w, work in enumerate(batch)]


# What one engine call costs beyond its tokens, in tokens' worth: MiniLM at 90% (2 threads) takes about 0.9 ms plus
# 18 us per token, so a call is worth ~48 tokens. A batch is cut where the next row would pad it by more than that.
CALL_OVERHEAD_TOKENS = 48


def _chunks(rows: list[tuple[int, int, int]], max_tokens: Optional[int]) -> list[list[tuple[int, int, int]]]:
    """Rows sorted by length cut into engine batches, each padded to its longest row: a batch ends where taking
    the next (longer) row would add more padding than a call of its own costs (CALL_OVERHEAD_TOKENS), so a short
    query does not pad up to a long passage, or where it would pass ``max_tokens`` padded tokens (a longer row
    runs alone); without a limit, the rows of each request run as one batch."""
    if max_tokens is None:
        by_work: dict[int, list[tuple[int, int, int]]] = {}
        for row in rows:
            by_work.setdefault(row[0], []).append(row)
        return list(by_work.values())
    chunks: list[list[tuple[int, int, int]]] = []
    current: list[tuple[int, int, int]] = []
    longest = 0
    for row in rows:
        length = max(row[2], 1)
        added_padding = len(current) * (length - longest)
        if current and ((len(current) + 1) * length > max_tokens or added_padding > CALL_OVERHEAD_TOKENS):
            chunks.append(current)
            current = []
        current.append(row)
        longest = length
    if current:
        chunks.append(current)
    return chunks


def _stack(rows: list[dict[str, np.ndarray]], token_outputs: frozenset[str]) -> Outputs:
    """Rows of outputs stacked into [rows, ...] arrays; token-level outputs zero-padded to the longest row."""
    stacked = {}
    for name in rows[0]:
        if name not in token_outputs:
            stacked[name] = np.stack([row[name] for row in rows])
            continue
        longest = max(1, *(len(row[name]) for row in rows))
        array = np.zeros((len(rows), longest, *rows[0][name].shape[1:]), dtype=rows[0][name].dtype)
        for i, row in enumerate(rows):
            array[i, :len(row[name])] = row[name]
        stacked[name] = array
    return stacked


__all__ = ["BatchStats", "Batcher"]
