"""How far an int8 export is from its fp32 twin: both are written to temporary files beside the destination,
loaded, and run on the same calibration inputs (texts from a file, tokenized with the model's tokenizer, or
random tokens); the agreement goes into the file's producer entry and the export report. The twin differs from
the int8 model in its linears only: it stores the embedding tables as the int8 file does (float16 with
``embeddings="fp16"``), so the agreement measures the int8 layers alone (the exporter makes both packings).

Only the runtime's public API is used (``SparseEngine``, ``pipeline`` and ``Pipeline.tokenize``), so the inputs
are tokenized exactly as a user's pipeline would tokenize them."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..engine import SparseEngine
from ..format import write_model
from ..format.spec import max_sequence_length
from ..pipelines import pipeline

RANDOM_SEQUENCES = 16
RANDOM_LENGTH = 128
BATCH = 8


def calibrate(out_path: str | os.PathLike, config: dict[str, Any], int8: tuple[dict, dict], fp32: tuple[dict, dict],
              tokenizer_text: str | None, calibration: str | os.PathLike | None) -> dict[str, Any]:
    """``int8`` and ``fp32`` are (linears meta, tensors) of the two packings of one model."""
    base = os.path.join(os.path.dirname(os.path.abspath(os.fspath(out_path))),
                        "." + os.path.basename(os.fspath(out_path)))
    paths = {"int8": base + ".int8-calibration", "fp32": base + ".fp32-calibration"}
    producer = {"name": "sparsebert", "purpose": "calibration"}
    try:
        for kind, (meta, tensors) in (("int8", int8), ("fp32", fp32)):
            write_model(paths[kind], config, meta, tensors, producer, tokenizer=tokenizer_text)
        # fp32 attention whatever SPARSEBERT_ATTENTION says: the figures describe the int8 weights alone.
        engines = {"int8": SparseEngine.load(paths["int8"], attention="fp32")}
        if calibration is None:
            engines["fp32"] = SparseEngine.load(paths["fp32"], attention="fp32")
            batches, described = _random_batches(config)
        else:
            texts = _texts(calibration, tokenizer_text)
            pipe = pipeline("feature-extraction", paths["fp32"])  # the twin file carries the tokenizer
            engines["fp32"] = pipe.engine
            length = min(pipe.max_length, RANDOM_LENGTH)
            batches = [pipe.tokenize(texts[i:i + BATCH], max_length=length) for i in range(0, len(texts), BATCH)]
            described = f"{len(texts)} texts from {os.path.basename(os.fspath(calibration))}"
        return {"inputs": described, **_agreement(engines, batches)}
    finally:
        for path in paths.values():
            if os.path.exists(path):
                os.remove(path)


def _random_batches(config: dict[str, Any]) -> tuple[list[dict[str, np.ndarray]], str]:
    longest = min(RANDOM_LENGTH, max_sequence_length(config))
    rng = np.random.default_rng(0)
    low = 1 if config["vocab_size"] > 1 else 0
    ids = rng.integers(low, config["vocab_size"], size=(RANDOM_SEQUENCES, longest))
    batches = [{"input_ids": ids[i:i + BATCH]} for i in range(0, RANDOM_SEQUENCES, BATCH)]
    return batches, f"random tokens ({RANDOM_SEQUENCES} x {longest})"


def _texts(calibration: str | os.PathLike, tokenizer_text: str | None) -> list[str]:
    if tokenizer_text is None:
        raise ValueError("calibration texts need the model's tokenizer: pass tokenizer= or export from a directory "
                         "with a tokenizer.json")
    try:
        with open(calibration, encoding="utf-8") as f:
            texts = [line.strip() for line in f if line.strip()]
    except UnicodeDecodeError as exc:
        raise ValueError(f"calibration file {os.fspath(calibration)} is not UTF-8 text ({exc.reason} at byte "
                         f"{exc.start})") from None
    if not texts:
        raise ValueError(f"calibration file {os.fspath(calibration)} holds no text")
    return texts


def _agreement(engines: dict[str, Any], batches: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    """The whole model's agreement (last hidden state, logits) and, per encoder layer, how far the int8 hidden
    state after that layer is from the fp32 one: ``layers`` [{relative_rms, min_token_cosine}], which shows where
    the error enters and how it grows."""
    cosines, worst, agree, total = [], 0.0, 0, 0
    layer_error = layer_norm = layer_cosine = None
    for inputs in batches:
        a = engines["int8"].run(inputs, output_hidden_states=True)
        b = engines["fp32"].run(inputs, output_hidden_states=True)
        mask = inputs.get("attention_mask", np.ones(inputs["input_ids"].shape, np.int64)).astype(bool)
        x = a["hidden_states"][1:, mask].astype(np.float64)  # [layers, tokens, hidden]
        y = b["hidden_states"][1:, mask].astype(np.float64)
        token_cos = _cosine(x, y)
        cosines.append(token_cos[-1])
        worst = max(worst, float(np.abs(x[-1] - y[-1]).max()))
        error, norm = np.square(x - y).sum(axis=(1, 2)), np.square(y).sum(axis=(1, 2))
        low = token_cos.min(axis=1)
        if layer_error is None:
            layer_error, layer_norm, layer_cosine = error, norm, low
        else:
            layer_error, layer_norm = layer_error + error, layer_norm + norm
            layer_cosine = np.minimum(layer_cosine, low)
        if "logits" in a:
            la, lb = a["logits"], b["logits"]
            if la.ndim == 3:  # token classification: unpadded tokens
                la, lb = la[mask], lb[mask]
            agree += int((la.argmax(-1) == lb.argmax(-1)).sum())
            total += la.shape[0]
    cos = np.concatenate(cosines)
    result = {"min_token_cosine": float(cos.min()), "mean_token_cosine": float(cos.mean()), "max_abs_diff": worst}
    if total:
        result["argmax_agreement"] = agree / total
    result["layers"] = [{"relative_rms": float(np.sqrt(e / n)) if n > 0 else 0.0, "min_token_cosine": float(c)}
                        for e, n, c in zip(layer_error, layer_norm, layer_cosine)]
    return result


def _cosine(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1) * np.linalg.norm(y, axis=-1)
    return (x * y).sum(axis=-1) / np.maximum(norms, 1e-30)
