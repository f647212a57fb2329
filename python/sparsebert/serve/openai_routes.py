"""OpenAI's embeddings API: ``POST /v1/embeddings`` (``input`` as a string, strings, a token array or token
arrays; ``encoding_format`` float or base64) and ``GET /v1/models``. Errors are OpenAI error objects; an input
longer than the model takes is a 400, as OpenAI answers it (no silent truncation)."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from .errors import VALIDATION, ServeError
from .inputs import check_count, compute_texts, token_arrays
from .schemas import parse, schemas


def embedding_value(vector: np.ndarray, encoding_format: str) -> Any:
    """A float32 vector as OpenAI sends it: a list of floats, or base64 of its little-endian float32 bytes."""
    vector = np.asarray(vector, dtype="<f4")
    return base64.b64encode(vector.tobytes()).decode("ascii") if encoding_format == "base64" else vector.tolist()


async def embeddings(request: Any, state: Any) -> dict[str, Any]:
    body = parse(schemas().Embeddings, await request.body())
    model = state.registry.find(body.model, "embed", "/v1/embeddings")
    hidden = model.config["hidden_size"]
    if body.dimensions is not None and body.dimensions != hidden:
        raise ServeError(400, f"dimensions: the model {model.name!r} gives {hidden} dimensions, not "
                              f"{body.dimensions}", VALIDATION, param="dimensions")
    given = body.input
    if isinstance(given, str):
        given = [given]
    elif given and isinstance(given[0], int):  # one token array
        given = [given]
    if given and isinstance(given[0], str):
        sequences, out = await compute_texts(model, given, state.settings, False, "input", 400)
    else:
        check_count(len(given), state.settings, "input")
        sequences, out = await model.compute(token_arrays, model, given, "input")
    vectors = model.pipeline.postprocess(sequences, out, pooling=model.pooling, normalize=model.normalize)
    tokens = sum(len(s.ids) for s in sequences)
    return {"object": "list", "model": model.name,
            "data": [{"object": "embedding", "index": i, "embedding": embedding_value(v, body.encoding_format)}
                     for i, v in enumerate(vectors)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


async def models(request: Any, state: Any) -> dict[str, Any]:
    return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "sparsebert"}
                                       for name in state.registry.models]}


ROUTES = [("/v1/embeddings", "POST", embeddings), ("/v1/models", "GET", models)]

__all__ = ["ROUTES", "embedding_value"]
