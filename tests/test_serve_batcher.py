"""The dynamic batcher alone, on a fake engine: what it merges, how it cuts by tokens and length, that batching
off runs each request alone, that a cancelled caller stalls nothing, that one failing request fails alone, and
that stop() finishes what was submitted."""

from __future__ import annotations

import asyncio
import dataclasses
import threading

import numpy as np
import pytest

from sparsebert.serve.batcher import CALL_OVERHEAD_TOKENS, Batcher


@dataclasses.dataclass
class Seq:
    ids: list[int]


class FakeEngine:
    """Returns, per row, the sum of the ids (a sequence output) and the ids themselves (a token output)."""

    def __init__(self, fail_on: int | None = None, gate: threading.Event | None = None):
        self.batches: list[list[int]] = []  # the lengths of each engine batch
        self.fail_on = fail_on
        self.gate = gate

    def __call__(self, sequences):
        if self.gate is not None:
            assert self.gate.wait(10)
        self.batches.append([len(s.ids) for s in sequences])
        if any(self.fail_on in s.ids for s in sequences):
            raise ValueError("bad id")
        longest = max(len(s.ids) for s in sequences)
        tokens = np.zeros((len(sequences), longest), dtype=np.int64)
        for i, s in enumerate(sequences):
            tokens[i, :len(s.ids)] = s.ids
        return {"sum": tokens.sum(axis=1), "tokens": tokens}


def make(engine, **kw):
    options = {"max_batch_tokens": 64, "max_wait_ms": 50.0, "batching": True, **kw}
    return Batcher(engine, ["tokens"], **options)


def run(coroutine):
    return asyncio.run(coroutine)


def test_concurrent_requests_merge_and_come_back_in_order():
    engine = FakeEngine()

    async def main():
        batcher = make(engine)
        batcher.start()
        requests = [[Seq([1, 2, 3]), Seq([4])], [Seq([5, 6])], [Seq([7, 8, 9, 10])]]
        results = await asyncio.gather(*(batcher.submit(r) for r in requests))
        await batcher.stop()
        return requests, results

    requests, results = run(main())
    assert len(engine.batches) == 1 and sorted(engine.batches[0]) == [1, 2, 3, 4]
    assert engine.batches[0] == sorted(engine.batches[0])  # grouped by length
    for request, result in zip(requests, results):
        assert result["sum"].tolist() == [sum(s.ids) for s in request]
        for i, s in enumerate(request):  # token outputs padded to the request's own longest
            assert result["tokens"][i].tolist() == s.ids + [0] * (result["tokens"].shape[1] - len(s.ids))
        assert result["tokens"].shape[1] == max(len(s.ids) for s in request)


def test_engine_batches_stay_within_max_batch_tokens():
    engine = FakeEngine()

    async def main():
        batcher = make(engine, max_batch_tokens=12)
        batcher.start()
        await asyncio.gather(*(batcher.submit([Seq([1] * n)]) for n in (1, 2, 3, 4, 5, 6, 20)))
        await batcher.stop()

    run(main())
    for lengths in engine.batches:
        assert len(lengths) == 1 or len(lengths) * max(lengths) <= 12, engine.batches
    assert [20] in engine.batches  # longer than the limit: alone
    assert sorted(n for lengths in engine.batches for n in lengths) == [1, 2, 3, 4, 5, 6, 20]


def test_short_queries_do_not_pad_up_to_a_long_passage():
    # Three short queries and two passages arrive together: the queries share one engine call, the passages
    # another, rather than all five padding to the longest (5 x 100 tokens for 225 real ones).
    engine = FakeEngine()
    short, long = 10, 100
    assert 3 * (long - short) > CALL_OVERHEAD_TOKENS  # the cut is worth a call

    async def main():
        batcher = make(engine, max_batch_tokens=4096)
        batcher.start()
        await asyncio.gather(*(batcher.submit([Seq([1] * n)]) for n in (short, long, short, long - 5, short)))
        await batcher.stop()

    run(main())
    assert sorted(engine.batches) == [[short] * 3, [long - 5, long]], engine.batches


def test_similar_lengths_share_a_call():
    engine = FakeEngine()

    async def main():
        batcher = make(engine, max_batch_tokens=4096)
        batcher.start()
        await asyncio.gather(*(batcher.submit([Seq([1] * n)]) for n in (30, 31, 33, 35, 36)))
        await batcher.stop()

    run(main())
    assert engine.batches == [[30, 31, 33, 35, 36]]


def test_without_batching_each_request_runs_alone():
    engine = FakeEngine()

    async def main():
        batcher = make(engine, batching=False)
        batcher.start()
        await asyncio.gather(*(batcher.submit([Seq([n]), Seq([n, n])]) for n in (1, 2, 3)))
        await batcher.stop()

    run(main())
    assert engine.batches == [[1, 2]] * 3


def test_a_cancelled_caller_does_not_stall_the_batcher():
    gate = threading.Event()
    engine = FakeEngine(gate=gate)

    async def main():
        batcher = make(engine, max_wait_ms=0)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit([Seq([1, 2])]))
        await asyncio.sleep(0.05)  # computing, held at the gate
        second = asyncio.ensure_future(batcher.submit([Seq([3])]))
        await asyncio.sleep(0.01)
        first.cancel()  # the client went away while its batch computes
        second_waiting = asyncio.ensure_future(batcher.submit([Seq([4])]))
        await asyncio.sleep(0.01)
        second.cancel()  # and one that went away while queued
        gate.set()
        result = await asyncio.wait_for(second_waiting, 10)
        await batcher.stop()
        return first, second, result

    first, second, result = run(main())
    assert first.cancelled() and second.cancelled()
    assert result["sum"].tolist() == [4]


def test_a_failing_request_fails_alone():
    engine = FakeEngine(fail_on=99)

    async def main():
        batcher = make(engine)
        batcher.start()
        results = await asyncio.gather(batcher.submit([Seq([1])]), batcher.submit([Seq([99])]),
                                       batcher.submit([Seq([2, 3])]), return_exceptions=True)
        await batcher.stop()
        return results

    good, bad, other = run(main())
    assert isinstance(bad, ValueError)
    assert good["sum"].tolist() == [1] and other["sum"].tolist() == [5]


def test_stop_finishes_what_was_submitted_and_refuses_more():
    engine = FakeEngine()

    async def main():
        batcher = make(engine, max_wait_ms=10_000)  # would wait long for company; stopping cuts the wait
        batcher.start()
        pending = [asyncio.ensure_future(batcher.submit([Seq([n])])) for n in range(5)]
        await asyncio.sleep(0.01)
        await asyncio.wait_for(batcher.stop(), 5)
        with pytest.raises(RuntimeError, match="not running"):
            await batcher.submit([Seq([1])])
        return [p.result()["sum"].tolist() for p in pending]

    assert run(main()) == [[n] for n in range(5)]
