"""What a request gets when it fails: ``ServeError`` (a status, a message, a kind) and the two body shapes clients
expect — text-embeddings-inference's ``{"error", "error_type"}`` and OpenAI's ``{"error": {"message", "type",
"param", "code"}}`` on the ``/v1`` routes. Imports only the standard library."""

from __future__ import annotations

from typing import Any, Optional

OPENAI_PREFIX = "/v1/"

# TEI's error kinds and their statuses (Validation is 413 there: too many inputs, an input too long).
VALIDATION, OVERLOADED, TOKENIZER, EMPTY, UNHEALTHY = "Validation", "Overloaded", "Tokenizer", "Empty", "Unhealthy"
# Kinds of our own, for what TEI has no word for.
UNAUTHORIZED, NOT_FOUND, BAD_REQUEST = "Unauthorized", "NotFound", "BadRequest"

# kind -> OpenAI's error type and code
_OPENAI_TYPE = {UNAUTHORIZED: ("invalid_request_error", "invalid_api_key"),
                OVERLOADED: ("rate_limit_error", "rate_limit_exceeded"),
                UNHEALTHY: ("server_error", "service_unavailable"),
                NOT_FOUND: ("invalid_request_error", "model_not_found")}


class ServeError(Exception):
    """A request the server refuses: HTTP ``status``, ``message`` for the client, ``kind`` (TEI's error_type),
    ``param`` (the request field at fault, for OpenAI's error object), extra response ``headers``."""

    def __init__(self, status: int, message: str, kind: str = VALIDATION, param: Optional[str] = None,
                 headers: Optional[dict[str, str]] = None, code: Optional[str] = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.param = param
        self.headers = headers or {}
        self.code = code


def error_body(path: str, error: ServeError) -> dict[str, Any]:
    """The JSON body of ``error`` for a request to ``path``, in the shape that route's clients parse."""
    if path.startswith(OPENAI_PREFIX):
        kind, code = _OPENAI_TYPE.get(error.kind, ("invalid_request_error", None))
        return {"error": {"message": error.message, "type": kind, "param": error.param,
                          "code": error.code or code}}
    return {"error": error.message, "error_type": error.kind}


__all__ = ["BAD_REQUEST", "EMPTY", "NOT_FOUND", "OPENAI_PREFIX", "OVERLOADED", "TOKENIZER", "UNAUTHORIZED",
           "UNHEALTHY", "VALIDATION", "ServeError", "error_body"]
