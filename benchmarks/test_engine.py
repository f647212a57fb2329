"""sparsebert on random BERT-base (fp32) at batch x seq (default 1 x 128), with the same-run ratio to ONNX Runtime
and PyTorch in ``extra_info``.

    pytest benchmarks/test_engine.py [--bench-threads 2] [--benchmark-json out.json]

pytest-benchmark times ``SparseEngine.run`` alone; the ratios come from the harness's interleaved timing
(``sparsebert.bench.timing.interleaved``), measured in the same test right before, as ``sparsebert bench``
measures them.  The peer benchmarks time ONNX Runtime and PyTorch alone on the same weights, for reference.
"""

from __future__ import annotations

import numpy as np
import pytest

from sparsebert.bench import flops, timing

# name -> (sparsity, block): the headline case (90% unstructured), its 4-block twin, and the dense baseline.
CASES = {"unstructured90": (0.9, 1), "block4_90": (0.9, 4), "dense": (0.0, 1)}
AGREEMENT_ATOL = 1e-3  # as the harness: fp32 engines agree to ~1e-5; a real bug moves outputs by >= 1e-2


def _check_agreement(prepared) -> dict:
    ref = prepared.hidden["sparsebert"]
    diffs = {name: float(np.max(np.abs(h - ref))) for name, h in prepared.hidden.items() if name != "sparsebert"}
    assert all(d <= AGREEMENT_ATOL for d in diffs.values()), f"outputs disagree: {diffs}"
    return diffs


@pytest.mark.parametrize("case", list(CASES))
def test_sparsebert_bert_base(benchmark, case, bert_base, settings, environment):
    prepared = bert_base(*CASES[case])
    diffs = _check_agreement(prepared)
    runners = prepared.runners
    times = timing.interleaved({name: r.run for name, r in runners.items()}, settings.runs, settings.warmup,
                               settings.pause_s)
    medians = {name: float(np.median(t)) for name, t in times.items()}
    work = flops.encoder_flops(prepared.config, prepared.linears, settings.batch, settings.seq)
    benchmark.group = f"bert-base {settings.batch}x{settings.seq}, {settings.threads} threads"
    benchmark.extra_info.update({
        "model": prepared.description,
        "batch": settings.batch,
        "seq": settings.seq,
        "threads": settings.threads,
        "isa": runners["sparsebert"].info["isa"],
        "interleaved_median_ms": medians,
        "ratio_to_onnxruntime": medians["sparsebert"] / medians["onnxruntime"],
        "ratio_to_pytorch": medians["sparsebert"] / medians["pytorch"],
        "max_abs_diff": diffs,
        "dense_gflop": work["dense_gflop"],
        "real_gflop": work["real_gflop"],
        "real_gflops_at_interleaved_median": flops.gflops(work["real_flop"], medians["sparsebert"]),
        "cpu": environment["cpu"],
        "commit": environment["commit"],
    })
    benchmark.pedantic(runners["sparsebert"].run, rounds=settings.runs, warmup_rounds=settings.warmup)


@pytest.mark.parametrize("peer", ["onnxruntime", "pytorch"])
def test_peer_bert_base(benchmark, peer, bert_base, settings, environment):
    # Dense runtimes: their latency does not depend on sparsity, so one case is enough.
    prepared = bert_base(*CASES["unstructured90"])
    _check_agreement(prepared)
    runner = prepared.runners[peer]
    benchmark.group = f"bert-base {settings.batch}x{settings.seq}, {settings.threads} threads"
    benchmark.extra_info.update({"model": prepared.description, "engine": runner.label, "threads": settings.threads,
                                 "cpu": environment["cpu"], "commit": environment["commit"]})
    benchmark.pedantic(runner.run, rounds=settings.runs, warmup_rounds=settings.warmup)
