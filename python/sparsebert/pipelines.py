"""Text in, answers out: ``sparsebert.pipeline(task, model_path)`` for feature extraction, sentence embeddings,
text classification, token classification, question answering and fill-mask (fill_mask.py), with the Hugging
Face ``tokenizers`` library.

The tokenizer comes from the packed file (the exporter carries a checkpoint's ``tokenizer.json`` into it), or
from ``tokenizer=``: a ``tokenizer.json`` path, a directory holding one, a ``tokenizers.Tokenizer`` or a
``transformers`` fast tokenizer. Texts are truncated to the longest sequence the model accepts. Outputs follow
the ``transformers`` pipelines of the same names (see each task's method).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .answer_spans import best_spans, window_probs, word_span
from .engine import SparseEngine
from .fill_mask import fill_masks
from .format import read_model
from .rerank import check_rerank_model, rerank
from .spelling import option
from .text_encoding import check_texts, encode_truncated, load_tokenizer, question_windows
from .tokenizer_text import TOKENIZER_FILE, tokenizer_json

TASKS = ("feature-extraction", "sentence-embedding", "text-classification", "token-classification",
         "question-answering", "fill-mask", "rerank")
_NEEDS_HEAD = {"text-classification": "sequence_classification", "token-classification": "token_classification",
               "question-answering": "question_answering", "fill-mask": "masked_lm",
               "rerank": "sequence_classification"}


def _text_list(inputs: Any, who: str) -> list[Any]:
    """The texts of a list (or other iterable) of them; TypeError for what is no list of texts, such as a dict
    (whose keys it would embed) or None."""
    if inputs is None or isinstance(inputs, (Mapping, bytes, bytearray)) or not isinstance(inputs, Iterable):
        raise TypeError(f"{who} takes a string or a list of strings, got {type(inputs).__name__}")
    return list(inputs)


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
        self.max_length = engine.max_sequence_length
        if task == "sentence-embedding" and "sentence_max_length" in config:  # sentence-transformers truncates here
            self.max_length = min(self.max_length, config["sentence_max_length"])
        self.sentence_pooling = config.get("sentence_pooling")
        self.sentence_normalize = config.get("sentence_normalize", False)
        self.pad_id = engine.pad_token_id
        self.id2label = {int(k): v for k, v in (config.get("id2label") or {}).items()}
        self._with_types = config["type_vocab_size"] > 1

    def __call__(self, inputs: Any = None, batch_size: int = 8, **kwargs: Any) -> Any:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if self.task == "question-answering":
            return self._answer_all(inputs, batch_size, **kwargs)
        if self.task == "rerank":  # pipe(texts, query=q) or pipe([(q, t), ...]): see rerank.py
            return rerank(self.engine, self.tokenizer, self.max_length, self._arrays, inputs, batch_size, **kwargs)
        single = isinstance(inputs, str)
        texts = [inputs] if single else _text_list(inputs, f"a {self.task} pipeline")
        check_texts(texts)
        results: list[Any] = []
        for start in range(0, len(texts), batch_size):
            results += self._run(texts[start:start + batch_size], start, **kwargs)
        return results[0] if single else results

    def tokenize(self, texts: str | Sequence[str], max_length: int | None = None) -> dict[str, np.ndarray]:
        """The engine inputs of ``texts`` (a string or a list of strings), as ``engine.run`` takes them: int64
        [batch, longest text] ``input_ids`` right-padded with the model's pad id, ``attention_mask`` (0 on padding)
        and ``token_type_ids`` (0 on padding). Each text is truncated to ``max_length`` tokens, special tokens
        included (default: the pipeline's ``max_length``: the longest sequence the model, or a sentence-transformers
        checkpoint, takes)."""
        texts = [texts] if isinstance(texts, str) else _text_list(texts, "tokenize")
        check_texts(texts, "tokenize's texts")
        if not texts:
            raise ValueError("tokenize needs at least one text")
        longest = self.engine.max_sequence_length
        if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int)
                                       or not 1 <= max_length <= longest):
            raise ValueError(f"max_length must be an integer in [1, {longest}], got {max_length!r}")
        return self._encode(texts, max_length)[1]

    def _encode(self, texts: list[str], max_length: int | None = None) -> tuple[list[Any], dict[str, np.ndarray]]:
        """The encodings of ``texts`` (the tasks read offsets, words and special tokens) and ``tokenize``'s arrays."""
        encodings = encode_truncated(self.tokenizer, texts, self.max_length if max_length is None else max_length)
        return encodings, self._arrays(encodings)

    def _arrays(self, encodings: list[Any]) -> dict[str, np.ndarray]:
        """The engine's inputs for encodings of any lengths: right-padded with the pad id, masked. A batch of texts
        without tokens (empty, with a tokenizer that adds no special tokens) is one masked position long."""
        seq = max(1, *(len(e.ids) for e in encodings))
        ids = np.full((len(encodings), seq), self.pad_id, dtype=np.int64)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        for i, e in enumerate(encodings):
            n = len(e.ids)
            ids[i, :n], mask[i, :n] = e.ids, 1
            if self._with_types:
                types[i, :n] = e.type_ids
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}

    def _run(self, texts: list[str], first: int, **kwargs: Any) -> list[Any]:
        """The results of ``texts``, the inputs from index ``first`` on."""
        encodings, inputs = self._encode(texts)
        if self.task == "fill-mask":  # fill_mask.py: logits at the mask tokens only
            return fill_masks(self.engine, self.tokenizer, encodings, inputs, first, **kwargs)
        self.check_encodings(encodings, first)
        return self.postprocess(encodings, self.engine.run(inputs), **kwargs)

    # The three steps of a call, public for callers that run the engine themselves (the server merges requests
    # into engine batches): encode, arrays -> engine.run -> postprocess. Not for fill-mask or question-answering.

    def encode(self, texts: list[str], max_length: int | None = None) -> list[Any]:
        """The ``tokenizers`` encodings of ``texts``, truncated to ``max_length`` tokens (default: the pipeline's);
        a truncated one has ``overflowing`` tokens. Not thread-safe: it sets the tokenizer's truncation."""
        return encode_truncated(self.tokenizer, texts, self.max_length if max_length is None else max_length)

    def arrays(self, encodings: list[Any]) -> dict[str, np.ndarray]:
        """The engine inputs of encodings (anything with ``ids`` and ``type_ids``) of any lengths, padded."""
        return self._arrays(encodings)

    def check_encodings(self, encodings: list[Any], first: int = 0) -> None:
        """ValueError for what the task cannot answer: a text without tokens to classify."""
        empty = next((i for i, e in enumerate(encodings) if not e.ids), None)
        if empty is not None and self.task == "text-classification":  # its logits would be those of padding
            raise ValueError(f"text {first + empty} has no tokens (the tokenizer adds no special tokens): nothing "
                             "to classify")

    def postprocess(self, encodings: list[Any], out: dict[str, np.ndarray], **kwargs: Any) -> list[Any]:
        """The answers for ``encodings`` from the engine's outputs ``out`` (row i is encoding i; positions past an
        encoding's length are not read), with the task's options as keywords."""
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
        embedding, L2-normalised when ``normalize`` (sentence-transformers' recipe); a text without tokens (empty,
        with a tokenizer that adds no special tokens) pools to zeros, as in sentence-transformers."""
        if pooling not in (None, "mean", "cls"):
            raise ValueError(f"pooling must be None, 'mean' or 'cls', got {pooling!r}")
        results = []
        for i, e in enumerate(encodings):
            hidden = out["last_hidden_state"][i, :len(e.ids)]
            if pooling is None:
                results.append(np.array(hidden))
                continue
            if pooling == "cls":
                vector = hidden[0].astype(np.float64) if len(hidden) else np.zeros(hidden.shape[1])
            else:  # the divisor clamped as sentence-transformers does: a text without tokens pools to zeros
                vector = hidden.sum(axis=0, dtype=np.float64) / max(len(hidden), 1e-9)
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
                             f"directory): {option('pooling')}")
        normalize = self.sentence_normalize if normalize is None else normalize
        return self._features(encodings, out, pooling=pooling, normalize=normalize)

    def _classify(self, out: dict[str, np.ndarray], top_k: int | None = 1, raw_scores: bool = False) -> list[Any]:
        """Per text, {"label", "score"} of the best label (softmax; sigmoid for a single label), as transformers'
        text-classification; ``top_k`` > 1 gives a list of the best k, None all of them; ``raw_scores``: the
        logits themselves (text-embeddings-inference's option)."""
        logits = out["logits"].astype(np.float64)
        if raw_scores:
            scores = logits
        else:
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


    # ------------------------------------------------------------------------------ question answering

    def _answer_all(self, inputs: Any, batch_size: int, question: str | None = None, context: str | None = None,
                    **kwargs: Any) -> Any:
        """``pipe(question=..., context=...)`` or ``pipe({"question", "context"})`` -> one answer;
        ``pipe([{...}, ...])`` -> a list."""
        if inputs is None:
            inputs = {"question": question, "context": context}
        single = isinstance(inputs, dict)
        items = [inputs] if single else list(inputs)
        for item in items:
            if not (isinstance(item, dict) and isinstance(item.get("question"), str)
                    and isinstance(item.get("context"), str)):
                raise TypeError("question-answering takes question= and context= strings, or dicts of them")
        results = [self._answer(item["question"], item["context"], batch_size, **kwargs) for item in items]
        return results[0] if single else results

    def _answer(self, question: str, context: str, batch_size: int, top_k: int = 1, max_seq_len: int = 384,
                doc_stride: int = 128, max_answer_len: int = 15, handle_impossible_answer: bool = False) -> Any:
        """The best answer span(s) in ``context``, as transformers' question-answering pipeline finds them: the
        context is cut into windows of ``max_seq_len`` tokens overlapping by ``doc_stride``; in each window the
        start and end logits of context tokens (and [CLS]) go through a softmax, and a span scores start x end
        probability, at most ``max_answer_len`` tokens long; spans are widened to whole words. Answers with the
        same text in several windows add their scores. Returns {"score", "start", "end", "answer"} (character
        offsets into ``context``), or a list of the ``top_k`` best."""
        for name, value in (("top_k", top_k), ("max_seq_len", max_seq_len), ("max_answer_len", max_answer_len)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(doc_stride, bool) or not isinstance(doc_stride, int) or doc_stride < 0:
            raise ValueError(f"doc_stride must be a non-negative integer, got {doc_stride!r}")
        max_seq_len = min(max_seq_len, self.max_length)
        doc_stride = min(doc_stride, max_seq_len // 2)
        windows = question_windows(self.tokenizer, question, context, max_seq_len, doc_stride, self.max_length)
        answers: dict[str, dict[str, Any]] = {}  # by answer text: one lookup per span, whatever the windows
        min_null_score = 1_000_000.0
        for start in range(0, len(windows), batch_size):
            chunk = windows[start:start + batch_size]
            out = self.engine.run(self._arrays(chunk))
            for i, w in enumerate(chunk):
                n = len(w.ids)
                # Wanted: the context's tokens, and [CLS] (token 0), which the softmax includes.
                wanted = np.array([sid == 1 for sid in w.sequence_ids], dtype=bool)
                wanted[0] = True
                starts = window_probs(out["start_logits"][i, :n], wanted)
                ends = window_probs(out["end_logits"][i, :n], wanted)
                if handle_impossible_answer:
                    min_null_score = min(min_null_score, float(starts[0] * ends[0]))
                starts[0] = ends[0] = 0.0
                for s, e, score in best_spans(starts, ends, wanted, top_k, max_answer_len):
                    lo, hi = word_span(w, s, e)
                    text = context[lo:hi]
                    if text in answers:
                        answers[text]["score"] += score
                    else:
                        answers[text] = {"score": score, "start": lo, "end": hi, "answer": text}
        ranked = list(answers.values())
        if handle_impossible_answer:
            ranked.append({"score": min_null_score, "start": 0, "end": 0, "answer": ""})
        ranked = sorted(ranked, key=lambda a: a["score"], reverse=True)[:top_k]
        return ranked[0] if top_k == 1 else ranked


def pipeline(task: str, model: str | os.PathLike, tokenizer: Any = None, num_threads: int | None = None,
             isa: str | None = None, attention: str | None = None) -> Pipeline:
    """A ``Pipeline`` for ``task`` (one of TASKS) on the packed model at ``model`` (num_threads, isa and attention
    as ``SparseEngine.load``'s)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; supported: {', '.join(TASKS)}")
    engine = SparseEngine.load(model, num_threads=num_threads, isa=isa, attention=attention)
    needed = _NEEDS_HEAD.get(task)
    if needed and engine.config["head"] != needed:
        raise ValueError(f"task {task!r} needs a model with a {needed} head; {model} has head "
                         f"{engine.config['head']!r}")
    if task == "rerank":
        check_rerank_model(engine.config, model)
    if tokenizer is None:
        text = read_model(model, verify_crc=False).header.get("tokenizer")
        if text is None:
            raise ValueError(f"{model} carries no tokenizer (export it from a directory with {TOKENIZER_FILE}, or "
                             f"with {option('export_tokenizer')}); {option('pipeline_tokenizer')}")
        where = f"the tokenizer carried in {os.fspath(model)}"
    else:
        text = tokenizer_json(tokenizer)
        where = os.fspath(tokenizer) if isinstance(tokenizer, (str, os.PathLike)) else "tokenizer="
    try:
        loaded = load_tokenizer(text)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    return Pipeline(task, engine, loaded)
