"""The real server (uvicorn on a free port of 127.0.0.1) called by real clients — the official ``openai`` package and
``httpx``: answers equal to the pipelines' on each request alone, every class of error with its status and body,
metrics that move, many concurrent requests merged into batches, overload, disconnects, the API key."""

from __future__ import annotations

import base64
import concurrent.futures
import json
import time

import httpx
import numpy as np
import openai
import pytest

import sparsebert
from sparsebert.serve import ServeSettings

from serve_helpers import ServerThread, export_models, metric

TEXTS = ["The cat sat on the mat.", "Hello!", "A sparse inference runtime executes pruned transformer encoders.",
         "Why?", "Stock markets fell sharply on Tuesday after the central bank raised rates."]
LONG = "word " * 200  # more than the 64 tokens the test models take


@pytest.fixture(scope="module")
def paths(tmp_path_factory, minilm_dir):
    return export_models(tmp_path_factory.mktemp("serve"), minilm_dir)


@pytest.fixture(scope="module")
def server(paths):
    running = ServerThread(paths, ServeSettings(num_threads=1, max_inputs_per_request=16, max_request_bytes=20_000))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def pipes(paths):
    made = {"emb": sparsebert.pipeline("feature-extraction", paths["emb"], num_threads=1),
            "cls": sparsebert.pipeline("text-classification", paths["cls"], num_threads=1),
            "reranker": sparsebert.pipeline("rerank", paths["reranker"], num_threads=1),
            "ner": sparsebert.pipeline("token-classification", paths["ner"], num_threads=1),
            "qa": sparsebert.pipeline("question-answering", paths["qa"], num_threads=1)}
    return made


def assert_vectors_equal(actual, expected):
    # The engine computes a sequence's rows independently of its batch-mates and of the padding after it, so
    # merging requests changes nothing: bitwise.
    np.testing.assert_array_equal(np.asarray(actual, dtype=np.float32), np.asarray(expected, dtype=np.float32))


# ------------------------------------------------------------------------------------------ answers


@pytest.mark.parametrize("encoding_format", [None, "float", "base64"])
def test_openai_client_embeddings_equal_the_pipeline(server, pipes, encoding_format):
    # Without encoding_format the client asks for base64 and decodes it itself; asked for base64, it hands it over.
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    options = {} if encoding_format is None else {"encoding_format": encoding_format}
    answer = client.embeddings.create(model="emb", input=TEXTS, **options)
    expected = pipes["emb"](TEXTS, pooling="mean")
    assert [d.index for d in answer.data] == list(range(len(TEXTS)))
    for data, vector in zip(answer.data, expected):
        embedding = data.embedding
        if encoding_format == "base64":
            embedding = np.frombuffer(base64.b64decode(embedding), dtype="<f4")
        assert_vectors_equal(embedding, vector)
    tokens = int(pipes["emb"].tokenize(TEXTS)["attention_mask"].sum())
    assert answer.usage.prompt_tokens == answer.usage.total_tokens == tokens
    assert answer.model == "emb" and answer.object == "list"


def test_openai_base64_is_little_endian_float32(http, pipes):
    body = http.post("/v1/embeddings", json={"model": "emb", "input": "Hello!", "encoding_format": "base64"}).json()
    decoded = np.frombuffer(base64.b64decode(body["data"][0]["embedding"]), dtype="<f4")
    assert_vectors_equal(decoded, pipes["emb"]("Hello!", pooling="mean"))


def test_openai_token_arrays(http, pipes):
    ids = pipes["emb"].tokenize(["Hello!", "Why?"])
    arrays = [[int(t) for t, m in zip(row, mask) if m] for row, mask in zip(ids["input_ids"], ids["attention_mask"])]
    one = http.post("/v1/embeddings", json={"model": "emb", "input": arrays[0]}).json()
    both = http.post("/v1/embeddings", json={"model": "emb", "input": arrays}).json()
    expected = pipes["emb"](["Hello!", "Why?"], pooling="mean")
    assert len(one["data"]) == 1 and one["usage"]["prompt_tokens"] == len(arrays[0])
    assert_vectors_equal(one["data"][0]["embedding"], expected[0])
    for data, vector in zip(both["data"], expected):
        assert_vectors_equal(data["embedding"], vector)


@pytest.mark.parametrize("normalize", [True, False])
def test_embed_equals_the_pipeline(http, pipes, normalize):
    answer = http.post("/embed", json={"inputs": TEXTS, "normalize": normalize})
    assert answer.status_code == 200, answer.text
    for vector, expected in zip(answer.json(), pipes["emb"](TEXTS, pooling="mean", normalize=normalize)):
        assert_vectors_equal(vector, expected)
    single = http.post("/embed", json={"inputs": "Hello!"}).json()
    assert len(single) == 1
    assert_vectors_equal(single[0], pipes["emb"]("Hello!", pooling="mean", normalize=True))


@pytest.mark.parametrize("raw_scores, return_text", [(False, False), (True, True)])
def test_rerank_equals_the_pipeline(http, pipes, raw_scores, return_text):
    query = "where do cats sit?"
    answer = http.post("/rerank", json={"query": query, "texts": TEXTS, "raw_scores": raw_scores,
                                        "return_text": return_text})
    assert answer.status_code == 200, answer.text
    expected = pipes["reranker"](TEXTS, query=query, raw_scores=raw_scores, return_text=return_text)
    assert answer.json() == expected


def test_predict_texts_and_pairs(http, pipes):
    pipe = pipes["cls"]
    single = http.post("/predict", json={"inputs": "Hello!", "model": "cls"}).json()
    assert single == pipe("Hello!", top_k=None)
    batch = http.post("/predict", json={"inputs": [["Hello!"], ["Why?"]], "model": "cls"}).json()
    assert batch == pipe(["Hello!", "Why?"], top_k=None)
    raw = http.post("/predict", json={"inputs": "Hello!", "raw_scores": True, "model": "cls"}).json()
    logits = pipe.engine.run(pipe.tokenize("Hello!"))["logits"][0]
    assert sorted(p["score"] for p in raw) == sorted(float(x) for x in logits.astype(np.float64))
    # A pair: both segments, truncated longest-first, as the rerank pipeline encodes pairs.
    pair = http.post("/predict", json={"inputs": ["Hello!", "Why?"], "model": "cls"}).json()
    mixed = http.post("/predict", json={"inputs": [["Hello!", "Why?"], ["Hello!"]], "model": "cls"}).json()
    encoding = pipe.tokenizer.encode("Hello!", "Why?")
    out = pipe.engine.run(pipe.arrays([encoding]))
    assert pair == pipe.postprocess([encoding], out, top_k=None)[0] == mixed[0]
    assert mixed[1] == single


def test_token_classification_and_question_answering(http, pipes):
    answer = http.post("/token-classification", json={"inputs": TEXTS[:3], "ignore_labels": []})
    assert answer.status_code == 200, answer.text
    assert answer.json() == pipes["ner"](TEXTS[:3], ignore_labels=[])
    assert http.post("/token-classification", json={"inputs": "Hello!"}).json() == pipes["ner"]("Hello!")
    context = "The cat sat on the mat while the dog slept in the garden by the old house."
    answer = http.post("/question-answering", json={"question": "Where is the cat?", "context": context,
                                                    "top_k": 2})
    assert answer.status_code == 200, answer.text
    assert answer.json() == pipes["qa"](question="Where is the cat?", context=context, top_k=2)


def test_info_health_models(http, paths):
    assert http.get("/health").json() == {"status": "ok"}
    info = http.get("/info").json()
    assert info["model_id"] == "emb" and info["model_type"] == {"embedding": {"pooling": "mean"}}
    assert info["max_input_length"] == 64 and info["max_client_batch_size"] == 16
    assert [m["model_id"] for m in info["models"]] == list(paths)
    assert "reranker" in info["models"][2]["model_type"]
    listed = http.get("/v1/models").json()
    assert [m["id"] for m in listed["data"]] == list(paths)


def test_truncate(http, pipes):
    refused = http.post("/embed", json={"inputs": ["Hello!", LONG]})
    assert refused.status_code == 413
    assert refused.json()["error_type"] == "Validation" and "inputs[1]" in refused.json()["error"]
    assert "64 tokens" in refused.json()["error"]
    truncated = http.post("/embed", json={"inputs": [LONG], "truncate": True, "normalize": False})
    assert truncated.status_code == 200
    assert_vectors_equal(truncated.json()[0], pipes["emb"](LONG, pooling="mean"))  # the pipeline truncates
    assert http.post("/rerank", json={"query": "q", "texts": [LONG]}).status_code == 413
    assert http.post("/rerank", json={"query": "q", "texts": [LONG], "truncate": True}).status_code == 200


# ------------------------------------------------------------------------------------------ errors


def tei_error(response, status, kind, *words):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "error_type"} and body["error_type"] == kind, body
    for word in words:
        assert word in body["error"], body


def openai_error(response, status, kind, param, *words):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == kind, error
    assert error["param"] == param, error
    for word in words:
        assert word in error["message"], error
    return error


def test_bad_bodies_are_422_naming_the_field(http):
    tei_error(http.post("/embed", json={"inputs": 5}), 422, "Validation", "inputs")
    tei_error(http.post("/embed", json={"inputs": "x", "normalize": "yes"}), 422, "Validation", "normalize")
    tei_error(http.post("/embed", json={"texts": ["x"]}), 422, "Validation", "inputs")
    tei_error(http.post("/rerank", json={"query": 1, "texts": ["a"]}), 422, "Validation", "query")
    tei_error(http.post("/embed", content=b"{not json", headers={"content-type": "application/json"}), 422,
              "Validation", "JSON")
    tei_error(http.post("/embed", json=["x"]), 422, "Validation", "object")
    tei_error(http.post("/predict", json={"inputs": ["a", "b", "c"], "model": "cls"}), 422, "Validation", "pair")
    tei_error(http.post("/question-answering", json={"question": "q", "context": "c", "top_k": 0}), 422,
              "Validation", "top_k")
    openai_error(http.post("/v1/embeddings", json={"model": "emb", "input": {"a": 1}}), 422,
                 "invalid_request_error", "input", "input")
    openai_error(http.post("/v1/embeddings", json={"model": "emb", "input": "x", "colour": 1}), 422,
                 "invalid_request_error", "colour", "colour")
    openai_error(http.post("/v1/embeddings", json={"model": "emb", "input": "x", "encoding_format": "int8"}),
                 422, "invalid_request_error", "encoding_format")


def test_limits(http):
    tei_error(http.post("/embed", json={"inputs": ["x"] * 17}), 413, "Validation", "17 inputs", "16")
    tei_error(http.post("/embed", json={"inputs": []}), 400, "Empty")
    tei_error(http.post("/embed", json={"inputs": "x" * 30_000}), 413, "Validation", "20000 bytes")

    def chunked():  # no Content-Length: the streamed size is what counts
        for _ in range(30):
            yield b" " * 1000
        yield b'{"inputs": "x"}'
    tei_error(http.post("/embed", content=chunked(), headers={"content-type": "application/json"}), 413,
              "Validation", "20000 bytes")
    openai_error(http.post("/v1/embeddings", json={"model": "emb", "input": LONG}), 400, "invalid_request_error",
                 "input", "64 tokens")
    openai_error(http.post("/v1/embeddings", json={"model": "emb", "input": [[1, 30522]]}), 400,
                 "invalid_request_error", "input", "30522", "vocabulary")
    openai_error(http.post("/v1/embeddings", json={"model": "emb", "input": [list(range(1, 70))]}), 400,
                 "invalid_request_error", "input", "69 tokens")
    openai_error(http.post("/v1/embeddings", json={"model": "emb", "input": "x", "dimensions": 8}), 400,
                 "invalid_request_error", "dimensions", "40")


def test_models_are_looked_up_by_name_only(http):
    error = openai_error(http.post("/v1/embeddings", json={"model": "../emb.sbert", "input": "x"}), 404,
                         "invalid_request_error", "model", "not served")
    assert error["code"] == "model_not_found"
    tei_error(http.post("/embed", json={"inputs": "x", "model": "/etc/passwd"}), 404, "NotFound")
    tei_error(http.post("/embed", json={"inputs": "x", "model": "cls"}), 400, "Validation", "classifier")
    tei_error(http.post("/predict", json={"inputs": "x"}), 422, "Validation", "several", "cls", "reranker")
    assert http.post("/predict", json={"inputs": "x", "model": "reranker"}).status_code == 200
    tei_error(http.get("/nowhere"), 404, "NotFound")
    tei_error(http.get("/embed"), 405, "NotFound")


def test_metrics_move(http):
    before = http.get("/metrics")
    assert before.status_code == 200 and before.headers["content-type"].startswith("text/plain")
    ok = metric(before.text, "sparsebert_requests_total", endpoint="/embed", status="200")
    tokens = metric(before.text, "sparsebert_tokens_total", model="emb")
    batches = metric(before.text, "sparsebert_batch_size_count", model="emb")
    http.post("/embed", json={"inputs": ["Hello!", "Why?"]})
    http.post("/embed", json={"inputs": 3})
    http.get("/no/such/path")
    after = http.get("/metrics").text
    assert metric(after, "sparsebert_requests_total", endpoint="/embed", status="200") == ok + 1
    assert metric(after, "sparsebert_requests_total", endpoint="/embed", status="422") >= 1
    assert metric(after, "sparsebert_requests_total", endpoint="other", status="404") >= 1
    assert metric(after, "sparsebert_tokens_total", model="emb") == tokens + 8  # [CLS] hello ! [SEP], [CLS] why ? [SEP]
    assert metric(after, "sparsebert_batch_size_count", model="emb") == batches + 1
    for name in ("sparsebert_queue_duration_seconds_count", "sparsebert_inference_duration_seconds_count",
                 "sparsebert_batch_tokens_count"):
        assert metric(after, name, model="emb") >= 1, name
    assert "sparsebert_queue_depth" in after and "sparsebert_request_duration_seconds_bucket" in after


# ------------------------------------------------------------------------------------------ concurrency


def test_concurrent_requests_are_batched_and_correct(paths, pipes):
    running = ServerThread({"emb": paths["emb"]}, ServeSettings(num_threads=1, max_wait_ms=100))
    try:
        texts = [TEXTS[i % len(TEXTS)] + " " + "more " * (i % 7) for i in range(32)]
        with httpx.Client(base_url=running.url, timeout=60) as client:
            with concurrent.futures.ThreadPoolExecutor(32) as pool:
                answers = list(pool.map(lambda t: client.post("/embed", json={"inputs": t}), texts))
            text = client.get("/metrics").text
        for t, answer in zip(texts, answers):
            assert answer.status_code == 200, answer.text
            assert_vectors_equal(answer.json()[0], pipes["emb"](t, pooling="mean", normalize=True))
        batches = metric(text, "sparsebert_batch_size_count", model="emb")
        sequences = metric(text, "sparsebert_batch_size_sum", model="emb")
        assert sequences == 32 and batches < 32, (batches, sequences)  # some engine batches held several requests
    finally:
        running.stop()


def test_overload_is_429_with_retry_after(paths):
    running = ServerThread({"emb": paths["emb"]}, ServeSettings(num_threads=1, max_queue=2, max_wait_ms=500))
    try:
        with httpx.Client(base_url=running.url, timeout=60) as client:
            with concurrent.futures.ThreadPoolExecutor(12) as pool:
                answers = list(pool.map(lambda i: client.post("/embed", json={"inputs": f"text {i}"}), range(12)))
        statuses = sorted(a.status_code for a in answers)
        assert statuses.count(200) >= 2 and statuses.count(429) >= 1 and set(statuses) == {200, 429}, statuses
        refused = next(a for a in answers if a.status_code == 429)
        assert refused.headers["retry-after"] == "1" and refused.json()["error_type"] == "Overloaded"
    finally:
        running.stop()


def test_a_client_that_disconnects_stalls_nothing(paths, pipes):
    running = ServerThread({"emb": paths["emb"]}, ServeSettings(num_threads=1, max_wait_ms=300))
    try:
        with httpx.Client(base_url=running.url, timeout=0.05) as impatient:
            for _ in range(3):
                with pytest.raises(httpx.TimeoutException):
                    impatient.post("/embed", json={"inputs": "Hello!"})
        with httpx.Client(base_url=running.url, timeout=60) as client:
            answer = client.post("/embed", json={"inputs": "Why?"})
            assert answer.status_code == 200
            assert_vectors_equal(answer.json()[0], pipes["emb"]("Why?", pooling="mean", normalize=True))
            deadline = time.monotonic() + 10
            while metric(client.get("/metrics").text, "sparsebert_requests_in_flight", model="emb") != 0:
                assert time.monotonic() < deadline, "requests of gone clients never finished"
                time.sleep(0.05)
    finally:
        running.stop()


def test_the_api_key(paths):
    running = ServerThread({"emb": paths["emb"]}, ServeSettings(num_threads=1, api_key="s3cret"))
    try:
        with httpx.Client(base_url=running.url, timeout=60) as client:
            assert client.get("/health").status_code == 200  # probes need no key
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
                for method, path in (("POST", "/embed"), ("GET", "/metrics"), ("GET", "/info"),
                                     ("POST", "/v1/embeddings"), ("GET", "/nowhere")):
                    answer = client.request(method, path, headers=headers, json={"inputs": "x"})
                    assert answer.status_code == 401, (method, path, headers)
                    assert answer.headers["www-authenticate"] == "Bearer"
            assert client.get("/info", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        wrong = openai.OpenAI(base_url=running.url + "/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            wrong.embeddings.create(model="emb", input="x")
        right = openai.OpenAI(base_url=running.url + "/v1", api_key="s3cret", max_retries=0)
        assert len(right.embeddings.create(model="emb", input="x").data[0].embedding) == 40
    finally:
        running.stop()


def test_settings_are_checked():
    with pytest.raises(ValueError, match="max_queue"):
        ServeSettings(max_queue=0)
    with pytest.raises(ValueError, match="max_wait_ms"):
        ServeSettings(max_wait_ms=float("nan"))
    with pytest.raises(ValueError, match="api_key"):
        ServeSettings(api_key=" ")
    assert json.loads(json.dumps(ServeSettings().__dict__))["max_batch_tokens"] == 4096
