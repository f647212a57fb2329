"""First end-to-end latency figure: sparsebert vs PyTorch eager on the same pruned BERT weights.

    python benchmarks/first_latency.py [--sparsity 0.9] [--block 1] [--batch 1] [--seq 128] [--threads 2]

Random-init BERT-base (speed does not depend on the values), encoder linears magnitude-pruned, exported with
sparsebert.export; both engines run the same inputs with the same thread count, interleaved, and the script
prints median / p10 latencies and their ratio. The full harness (ONNX Runtime, DeepSparse, sweeps) is
`sparsebert bench` (issue 3); this script only records where the engine starts.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--block", type=int, default=1, choices=(1, 4))
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=30)
    a = ap.parse_args()

    import torch
    from transformers import BertConfig, BertModel

    import sparsebert
    from sparsebert.pruning import prune_bert_

    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    model = BertModel(BertConfig(attn_implementation="eager")).eval()  # BERT-base defaults
    prune_bert_(model, a.sparsity, a.block)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bert.sbert")
        sparsebert.export(model, path, verbose=False)
        engine = sparsebert.SparseEngine.load(path, num_threads=a.threads)

    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 2000, (a.batch, a.seq), dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    torch_feeds = {k: torch.from_numpy(v) for k, v in feeds.items()}

    def run_sparse():
        engine.run(feeds)

    def run_torch():
        with torch.inference_mode():
            model(**torch_feeds)

    for fn in (run_sparse, run_torch):
        for _ in range(3):
            fn()
    times = {"sparsebert": [], "pytorch": []}
    for _ in range(a.runs):
        for name, fn in (("sparsebert", run_sparse), ("pytorch", run_torch)):
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * 1e3)

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=os.path.dirname(__file__)).stdout.strip()
    except OSError:
        commit = "?"
    cpu = sparsebert._core.cpu_info()["brand"] if hasattr(sparsebert, "_core") else ""
    print(f"BERT-base {a.sparsity:.0%} {'4-block' if a.block == 4 else 'unstructured'}, batch {a.batch} x seq "
          f"{a.seq}, {a.threads} threads, isa {engine.isa}, {cpu}, commit {commit}")
    med = {k: float(np.median(v)) for k, v in times.items()}
    for name, v in times.items():
        print(f"  {name:10s} median {med[name]:8.2f} ms   p10 {np.percentile(v, 10):8.2f} ms")
    print(f"  sparsebert / pytorch = {med['sparsebert'] / med['pytorch']:.3f}")


if __name__ == "__main__":
    main()
