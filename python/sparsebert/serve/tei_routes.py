"""text-embeddings-inference's routes: ``POST /embed``, ``/rerank``, ``/predict``, with TEI's fields, answers
and errors (413 for too many inputs or an input too long without ``truncate``, 429 when overloaded). Each answer
is what the matching pipeline gives for the request alone."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..rerank import rank
from .errors import VALIDATION, ServeError
from .inputs import check_count, compute_texts, encode_text_pairs, encode_texts
from .schemas import parse, schemas


async def embed(request: Any, state: Any) -> Any:
    body = parse(schemas().Embed, await request.body())
    model = state.registry.find(body.model, "embed", "/embed")
    texts = [body.inputs] if isinstance(body.inputs, str) else body.inputs
    sequences, out = await compute_texts(model, texts, state.settings, body.truncate, "inputs")
    vectors = model.pipeline.postprocess(sequences, out, pooling=model.pooling, normalize=body.normalize)
    return [np.asarray(v, dtype=np.float32).tolist() for v in vectors]


async def rerank(request: Any, state: Any) -> Any:
    body = parse(schemas().Rerank, await request.body())
    model = state.registry.find(body.model, "rerank", "/rerank")
    check_count(len(body.texts), state.settings, "texts")
    pairs = [(body.query, text) for text in body.texts]
    _, out = await model.compute(encode_text_pairs, model, pairs, body.truncate, "texts")
    return rank(pairs, out["logits"][:, 0], True, raw_scores=body.raw_scores, return_text=body.return_text)


def _predict_items(inputs: Any) -> tuple[bool, list[tuple[str, ...]]]:
    """(one input?, the inputs as 1- or 2-tuples) of /predict's ``inputs``."""
    if isinstance(inputs, str):
        return True, [(inputs,)]
    if inputs and isinstance(inputs[0], str):  # [text] or [text, text_pair]
        items, single = [tuple(inputs)], True
    else:
        items, single = [tuple(item) for item in inputs], False
    for i, item in enumerate(items):
        if len(item) not in (1, 2):
            where = "inputs" if single else f"inputs[{i}]"
            raise ServeError(422, f"{where}: an input is a string or a pair [string, string], got {len(item)} "
                                  "strings", VALIDATION, param="inputs")
    return single, items


def _encode_items(model: Any, items: list[tuple[str, ...]], truncate: bool) -> list[Any]:
    """Singles and pairs encoded apart (a pair truncates longest-first), back in the request's order."""
    singles = [i for i, item in enumerate(items) if len(item) == 1]
    pairs = [i for i, item in enumerate(items) if len(item) == 2]
    encodings: list[Any] = [None] * len(items)
    if singles:
        for i, e in zip(singles, encode_texts(model, [items[i][0] for i in singles], truncate, "inputs")):
            encodings[i] = e
    if pairs:
        for i, e in zip(pairs, encode_text_pairs(model, [items[i] for i in pairs], truncate, "inputs")):
            encodings[i] = e
    try:
        model.pipeline.check_encodings(encodings)
    except ValueError as exc:
        raise ServeError(422, f"inputs: {exc}", VALIDATION, param="inputs") from None
    return encodings


async def predict(request: Any, state: Any) -> Any:
    body = parse(schemas().Predict, await request.body())
    model = state.registry.find(body.model, "predict", "/predict")
    single, items = _predict_items(body.inputs)
    check_count(len(items), state.settings, "inputs")
    sequences, out = await model.compute(_encode_items, model, items, body.truncate)
    predictions = model.pipeline.postprocess(sequences, out, top_k=None, raw_scores=body.raw_scores)
    return predictions[0] if single else predictions


ROUTES = [("/embed", "POST", embed), ("/rerank", "POST", rerank), ("/predict", "POST", predict)]

__all__ = ["ROUTES"]
