"""Text in, answers out: ``sparsebert.pipeline(task, model_path)`` for feature extraction, sentence embeddings,
text classification and token classification, with the Hugging Face ``tokenizers`` library.

The tokenizer comes from the packed file (the exporter carries a checkpoint's ``tokenizer.json`` into it), or
from ``tokenizer=``: a ``tokenizer.json`` path, a directory holding one, a ``tokenizers.Tokenizer`` or a
``transformers`` fast tokenizer. Texts are truncated to the longest sequence the model accepts. Outputs follow
the ``transformers`` pipelines of the same names (see each task's method).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from .engine import SparseEngine
from .format import read_model
from .format.spec import max_sequence_length
from .tokenizer_text import TOKENIZER_FILE, tokenizer_json

TASKS = ("feature-extraction", "sentence-embedding", "text-classification", "token-classification")
_NEEDS_HEAD = {"text-classification": "sequence_classification", "token-classification": "token_classification"}


def _tokenizers() -> Any:
    try:
        import tokenizers
    except ImportError:
        raise ImportError("sparsebert pipelines need the 'tokenizers' package: pip install tokenizers") from None
    return tokenizers


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class Pipeline:
    """A task on a loaded engine and a tokenizer; call it on a string or a list of strings."""

    def __init__(self, task: str, engine: SparseEngine, tokenizer: Any):
        self.task = task
        self.engine = engine
        self.tokenizer = tokenizer
        config = engine.config
        self.max_length = max_sequence_length(config)
        if task == "sentence-embedding" and "sentence_max_length" in config:  # sentence-transformers truncates here
            self.max_length = min(self.max_length, config["sentence_max_length"])
        self.sentence_pooling = config.get("sentence_pooling")
        self.sentence_normalize = config.get("sentence_normalize", False)
        self.pad_id = config.get("pad_token_id", 0) if config.get("position_ids") == "padding_offset" else 0
        self.id2label = {int(k): v for k, v in (config.get("id2label") or {}).items()}
        self._with_types = config["type_vocab_size"] > 1

    def __call__(self, inputs: str | Sequence[str], batch_size: int = 8, **kwargs: Any) -> Any:
        single = isinstance(inputs, str)
        texts = [inputs] if single else list(inputs)
        if not all(isinstance(t, str) for t in texts):
            raise TypeError("pipeline inputs must be a string or a list of strings")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        results: list[Any] = []
        for start in range(0, len(texts), batch_size):
            results += self._run(texts[start:start + batch_size], **kwargs)
        return results[0] if single else results

    def _encode(self, texts: list[str]) -> tuple[list[Any], dict[str, np.ndarray]]:
        self.tokenizer.enable_truncation(self.max_length)
        self.tokenizer.no_padding()
        encodings = self.tokenizer.encode_batch(texts)
        seq = max(len(e.ids) for e in encodings)
        ids = np.full((len(texts), seq), self.pad_id, dtype=np.int64)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        for i, e in enumerate(encodings):
            n = len(e.ids)
            ids[i, :n], mask[i, :n] = e.ids, 1
            if self._with_types:
                types[i, :n] = e.type_ids
        return encodings, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}

    def _run(self, texts: list[str], **kwargs: Any) -> list[Any]:
        encodings, inputs = self._encode(texts)
        out = self.engine.run(inputs)
        if self.task == "feature-extraction":
            return self._features(encodings, out, **kwargs)
        if self.task == "sentence-embedding":
            return self._sentences(encodings, out, **kwargs)
        if self.task == "text-classification":
            return self._classify(out, **kwargs)
        return self._tag(encodings, out, **kwargs)

    @staticmethod
    def _features(encodings: list[Any], out: dict[str, np.ndarray], pooling: str | None = None,
                  normalize: bool = False) -> list[np.ndarray]:
        """Per text, last_hidden_state [tokens, H] (special tokens included), as transformers'
        feature-extraction gives it; or with ``pooling`` ("mean" over the tokens, or "cls") one [H] sentence
        embedding, L2-normalised when ``normalize`` (sentence-transformers' recipe)."""
        if pooling not in (None, "mean", "cls"):
            raise ValueError(f"pooling must be None, 'mean' or 'cls', got {pooling!r}")
        results = []
        for i, e in enumerate(encodings):
            hidden = out["last_hidden_state"][i, :len(e.ids)]
            if pooling is None:
                results.append(np.array(hidden))
                continue
            vector = hidden.mean(axis=0, dtype=np.float64) if pooling == "mean" else hidden[0].astype(np.float64)
            if normalize:
                vector = vector / max(np.linalg.norm(vector), 1e-12)
            results.append(vector.astype(np.float32))
        return results

    def _sentences(self, encodings: list[Any], out: dict[str, np.ndarray], pooling: str | None = None,
                   normalize: bool | None = None) -> list[np.ndarray]:
        """Per text, one float32 [H] embedding: pooled and normalised as the sentence-transformers checkpoint
        said (the exporter records it), or as ``pooling`` ("mean" or "cls") and ``normalize`` say."""
        pooling = pooling or self.sentence_pooling
        if pooling is None:
            raise ValueError("this model records no sentence pooling (not exported from a sentence-transformers "
                             "directory): pass pooling='mean' or 'cls'")
        normalize = self.sentence_normalize if normalize is None else normalize
        return self._features(encodings, out, pooling=pooling, normalize=normalize)

    def _classify(self, out: dict[str, np.ndarray], top_k: int | None = 1) -> list[Any]:
        """Per text, {"label", "score"} of the best label (softmax; sigmoid for a single label), as transformers'
        text-classification; ``top_k`` > 1 gives a list of the best k, None all of them."""
        logits = out["logits"].astype(np.float64)
        scores = 1.0 / (1.0 + np.exp(-logits)) if logits.shape[1] == 1 else _softmax(logits)
        results = []
        for row in scores:
            order = np.argsort(-row, kind="stable")
            ranked = [{"label": self.id2label.get(int(j), f"LABEL_{j}"), "score": float(row[j])} for j in order]
            results.append(ranked[0] if top_k == 1 else ranked[:top_k])
        return results

    def _tag(self, encodings: list[Any], out: dict[str, np.ndarray],
             ignore_labels: Sequence[str] = ("O",)) -> list[list[dict[str, Any]]]:
        """Per text, one entry per token (special tokens left out) whose best label is not ignored: "entity",
        "score" (softmax), "index" (the token's position), "word", "start", "end" (character offsets), as
        transformers' token-classification with no aggregation."""
        scores = _softmax(out["logits"].astype(np.float64))
        results = []
        for i, e in enumerate(encodings):
            entities = []
            for t in range(len(e.ids)):
                if e.special_tokens_mask[t]:
                    continue
                best = int(np.argmax(scores[i, t]))
                label = self.id2label.get(best, f"LABEL_{best}")
                if label in ignore_labels:
                    continue
                start, end = e.offsets[t]
                entities.append({"entity": label, "score": float(scores[i, t, best]), "index": t,
                                 "word": e.tokens[t], "start": start, "end": end})
            results.append(entities)
        return results


def pipeline(task: str, model: str | os.PathLike, tokenizer: Any = None, num_threads: int | None = None,
             isa: str | None = None) -> Pipeline:
    """A ``Pipeline`` for ``task`` (one of TASKS) on the packed model at ``model``."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; supported: {', '.join(TASKS)}")
    engine = SparseEngine.load(model, num_threads=num_threads, isa=isa)
    needed = _NEEDS_HEAD.get(task)
    if needed and engine.config["head"] != needed:
        raise ValueError(f"task {task!r} needs a model with a {needed} head; {model} has head "
                         f"{engine.config['head']!r}")
    if tokenizer is None:
        text = read_model(model, verify_crc=False).header.get("tokenizer")
        if text is None:
            raise ValueError(f"{model} carries no tokenizer (export it from a directory with {TOKENIZER_FILE}, or "
                             "pass export(..., tokenizer=...)); pass pipeline(..., tokenizer=...)")
    else:
        text = tokenizer_json(tokenizer)
    return Pipeline(task, engine, _tokenizers().Tokenizer.from_str(text))
