"""The pipelines' other tasks over HTTP, with the pipelines' own fields and answers: ``POST
/token-classification`` (entities per text, batched with other requests) and ``POST /question-answering`` (the
best answer span(s); its windows run as one call of the pipeline, not merged with other requests)."""

from __future__ import annotations

from typing import Any

from .errors import VALIDATION, ServeError
from .inputs import compute_texts
from .schemas import parse, schemas


async def token_classification(request: Any, state: Any) -> Any:
    body = parse(schemas().TokenClassification, await request.body())
    model = state.registry.find(body.model, "token-classification", "/token-classification")
    texts = [body.inputs] if isinstance(body.inputs, str) else body.inputs
    sequences, out = await compute_texts(model, texts, state.settings, body.truncate, "inputs")
    entities = model.pipeline.postprocess(sequences, out, ignore_labels=tuple(body.ignore_labels))
    return entities[0] if isinstance(body.inputs, str) else entities


async def question_answering(request: Any, state: Any) -> Any:
    body = parse(schemas().QuestionAnswering, await request.body())
    model = state.registry.find(body.model, "question-answering", "/question-answering")
    options = {"top_k": body.top_k, "max_answer_len": body.max_answer_len, "max_seq_len": body.max_seq_len,
               "doc_stride": body.doc_stride, "handle_impossible_answer": body.handle_impossible_answer}
    async with model.admission():
        try:  # the whole pipeline call on the tokenizer thread: it tokenizes as it goes
            return await model.on_tokenizer_thread(model.pipeline, question=body.question, context=body.context,
                                                   **options)
        except ValueError as exc:
            raise ServeError(422, str(exc), VALIDATION) from None


ROUTES = [("/token-classification", "POST", token_classification),
          ("/question-answering", "POST", question_answering)]

__all__ = ["ROUTES"]
