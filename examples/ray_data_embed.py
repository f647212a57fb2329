"""Embed a corpus with Ray Data: one text per line of TEXTS in, one float32 embedding per line out (a .npy matrix,
row i the embedding of line i), computed by CONCURRENCY Ray actors that each load MODEL once.

    pip install "sparsebert[ray]"
    python examples/ray_data_embed.py minilm.sbert corpus.txt embeddings.npy --concurrency 2

MODEL is a packed sentence-embedding model (exported from a sentence-transformers directory, so it records its
pooling). Joins the Ray cluster at RAY_ADDRESS if set, else starts one on this machine. For a corpus larger than
memory, write the dataset out instead of collecting it (``ds.write_parquet(...)``).
"""

from __future__ import annotations

import argparse

import numpy as np
import ray

from sparsebert.ray_data import SparsebertPredictor


def embed(model: str, texts: list[str], concurrency: int, batch_size: int) -> np.ndarray:
    # Without preserve_order, Ray Data may hand blocks on in the order they finish.
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    ds = ray.data.from_items([{"text": text} for text in texts])
    ds = ds.map_batches(SparsebertPredictor, fn_constructor_kwargs={"model": model, "task": "sentence-embedding"},
                        batch_size=batch_size, concurrency=concurrency, num_cpus=1, batch_format="numpy")
    return np.stack([row["embedding"] for row in ds.take_all()])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a packed sentence-embedding model (.sbert)")
    parser.add_argument("texts", help="a UTF-8 text file, one text per line")
    parser.add_argument("output", help="where to write the embeddings (.npy)")
    parser.add_argument("--concurrency", type=int, default=2, help="Ray actors, each with the model loaded")
    parser.add_argument("--batch-size", type=int, default=256, help="texts per batch handed to an actor")
    args = parser.parse_args(argv)
    with open(args.texts, encoding="utf-8") as f:
        texts = [line.rstrip("\n") for line in f if line.strip()]
    if not ray.is_initialized():
        ray.init()
    embeddings = embed(args.model, texts, args.concurrency, args.batch_size)
    np.save(args.output, embeddings)
    print(f"{len(texts)} texts -> {args.output}: float32 {embeddings.shape}")


if __name__ == "__main__":
    main()
