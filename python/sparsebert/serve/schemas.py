"""The request bodies, as pydantic models with strict types (``true`` is no number, ``1`` no boolean), and the
one way a body is read: ``parse(schema, body)``, whose failures are 422 errors naming the field. The OpenAI route
refuses unknown fields, as OpenAI does; the text-embeddings-inference routes ignore them, as TEI does.

The models are built on first use (``schemas()``), so that this module imports without pydantic."""

# No `from __future__ import annotations`: pydantic reads these annotations at class creation, in this scope.

import functools
import types
from typing import Any, List, Literal, Optional, Union

from ..extras import require
from .errors import VALIDATION, ServeError

PURPOSE = "sparsebert serve"
MAX_TOP_K = 100


@functools.lru_cache(maxsize=None)
def schemas() -> types.SimpleNamespace:
    pydantic = require("pydantic", PURPOSE)
    Str, Int, Bool = pydantic.StrictStr, pydantic.StrictInt, pydantic.StrictBool
    Field = pydantic.Field
    forbid = pydantic.ConfigDict(extra="forbid", strict=True)
    ignore = pydantic.ConfigDict(extra="ignore", strict=True)

    class Embeddings(pydantic.BaseModel):  # OpenAI's POST /v1/embeddings
        model_config = forbid
        input: Union[Str, List[Str], List[Int], List[List[Int]]]
        model: Str
        encoding_format: Literal["float", "base64"] = "float"
        dimensions: Optional[Int] = None
        user: Optional[Str] = None

    class Embed(pydantic.BaseModel):  # TEI's POST /embed
        model_config = ignore
        inputs: Union[Str, List[Str]]
        truncate: Bool = False
        normalize: Bool = True
        model: Optional[Str] = None

    class Rerank(pydantic.BaseModel):  # TEI's POST /rerank
        model_config = ignore
        query: Str
        texts: List[Str]
        truncate: Bool = False
        raw_scores: Bool = False
        return_text: Bool = False
        model: Optional[Str] = None

    class Predict(pydantic.BaseModel):  # TEI's POST /predict: a text, a pair, or a batch of texts and pairs
        model_config = ignore
        inputs: Union[Str, List[Str], List[List[Str]]]
        truncate: Bool = False
        raw_scores: Bool = False
        model: Optional[Str] = None

    class TokenClassification(pydantic.BaseModel):  # the token-classification pipeline's call
        model_config = ignore
        inputs: Union[Str, List[Str]]
        truncate: Bool = False
        ignore_labels: List[Str] = ["O"]
        model: Optional[Str] = None

    class QuestionAnswering(pydantic.BaseModel):  # the question-answering pipeline's call
        model_config = ignore
        question: Str
        context: Str
        top_k: Int = Field(1, ge=1, le=MAX_TOP_K)
        max_answer_len: Int = Field(15, ge=1)
        max_seq_len: Int = Field(384, ge=1)
        doc_stride: Int = Field(128, ge=0)
        handle_impossible_answer: Bool = False
        model: Optional[Str] = None

    return types.SimpleNamespace(Embeddings=Embeddings, Embed=Embed, Rerank=Rerank, Predict=Predict,
                                 TokenClassification=TokenClassification, QuestionAnswering=QuestionAnswering,
                                 ValidationError=pydantic.ValidationError)


def parse(schema: Any, body: bytes) -> Any:
    """``body`` (JSON) as ``schema``; a 422 ServeError naming the first field at fault otherwise."""
    try:
        return schema.model_validate_json(body)
    except schemas().ValidationError as exc:
        errors = exc.errors(include_url=False)
        first = errors[0]
        if first["type"] == "json_invalid":
            raise ServeError(422, f"the body is not valid JSON: {first['msg']}", VALIDATION) from None
        if first["type"] == "model_type":
            raise ServeError(422, "the body must be a JSON object", VALIDATION) from None
        field = ".".join(str(part) for part in first["loc"]) or "body"
        others = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
        message = f"{field}: {first['msg']}{others}"
        if first["type"] == "union_tag_invalid" or len({e["loc"][:1] for e in errors}) == 1 and len(errors) > 1:
            message = f"{first['loc'][0]}: {_union_hint(schema, first['loc'][0])}"
        raise ServeError(422, message, VALIDATION, param=str(first["loc"][0]) if first["loc"] else None) from None


_UNION_HINTS = {"input": "must be a string, a list of strings, a list of token ids or a list of lists of token ids",
                "inputs": "must be a string or a list of strings (/predict: also pairs [string, string])"}


def _union_hint(schema: Any, field: Any) -> str:
    return _UNION_HINTS.get(str(field), f"has the wrong type for {schema.__name__}")


__all__ = ["MAX_TOP_K", "parse", "schemas"]
