"""Scale-out on Ray, on a local Ray cluster started once for the module: Ray Data batch inference with
SparsebertPredictor (rows equal to the pipeline's, in order; examples/ray_data_embed.py run as a user runs it) and
the Ray Serve deployment of the HTTP server (2 replicas behind Ray Serve's proxy on 127.0.0.1, driven by the official
openai client). The predictor's tasks and mistakes are checked on plain batches first, without Ray."""

from __future__ import annotations

import os
import runpy
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import sparsebert
from sparsebert.ray_data import TASK_COLUMNS, SparsebertPredictor

from conftest import SENTENCES, checkpoint_with_tokenizer

ROOT = Path(__file__).resolve().parent.parent
# Ray's own modules warn about their own deprecated settings as they start (the suite turns warnings into errors).
ON_RAY = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray")
TEXTS = [*SENTENCES, "Zürich's café serves crème brûlée on 3 May 2021!", "a", "word " * 300]


@pytest.fixture(scope="module")
def models(tmp_path_factory, minilm_dir):
    """Packed models by task: the real all-MiniLM-L6-v2 (it records its pooling) and small random heads over its
    tokenizer."""
    root = tmp_path_factory.mktemp("ray_models")
    paths = {"sentence-embedding": root / "minilm.sbert"}
    sparsebert.export(minilm_dir, paths["sentence-embedding"], verbose=False)
    for task, kind, config in (("text-classification", "sequence_classification", {}),
                               ("token-classification", "token_classification", {}),
                               ("rerank", "sequence_classification", {"num_labels": 1}),
                               ("question-answering", "question_answering", {}),
                               ("feature-extraction", "base", {})):
        _, ckpt = checkpoint_with_tokenizer(kind, root / task, minilm_dir, **config)
        paths[task] = root / f"{task}.sbert"
        sparsebert.export(ckpt, paths[task], verbose=False)
    return paths


def numpy_batch(**columns) -> dict:
    return {name: np.array(values, dtype=object) for name, values in columns.items()}


# ------------------------------------------------------------------------------------- the predictor, without Ray

def test_embeddings_and_features_equal_the_pipeline_row_by_row(models):
    embed = SparsebertPredictor(models["sentence-embedding"], "sentence-embedding", num_threads=1)
    out = embed(numpy_batch(text=TEXTS, id=list(range(len(TEXTS)))))
    alone = sparsebert.pipeline("sentence-embedding", models["sentence-embedding"], num_threads=1)
    assert out["embedding"].dtype == np.float32 and out["embedding"].shape == (len(TEXTS), 384)
    np.testing.assert_array_equal(out["embedding"], np.stack([alone(t) for t in TEXTS]))
    assert out["id"].tolist() == list(range(len(TEXTS)))  # the batch's own columns pass through

    features = SparsebertPredictor(models["feature-extraction"], "feature-extraction", num_threads=1,
                                   pipeline_batch_size=3)(numpy_batch(text=TEXTS))
    pipe = sparsebert.pipeline("feature-extraction", models["feature-extraction"], num_threads=1)
    for got, text in zip(features["last_hidden_state"], TEXTS):
        np.testing.assert_array_equal(got, pipe(text))
    pooled = SparsebertPredictor(models["feature-extraction"], "feature-extraction", pooling="cls",
                                 columns={"embedding": "vector"})(numpy_batch(text=TEXTS))
    np.testing.assert_array_equal(pooled["vector"], np.stack([pipe(t, pooling="cls") for t in TEXTS]))
    empty = embed(numpy_batch(text=[]))
    assert empty["embedding"].shape == (0, 384)


def test_classification_tagging_rerank_and_answers_equal_the_pipeline(models):
    pipe = {task: sparsebert.pipeline(task, models[task], num_threads=1) for task in TASK_COLUMNS if task in models}
    out = SparsebertPredictor(models["text-classification"], "text-classification")(numpy_batch(text=TEXTS))
    assert out["label"].tolist() == [pipe["text-classification"](t)["label"] for t in TEXTS]
    assert out["score"].tolist() == [pipe["text-classification"](t)["score"] for t in TEXTS]
    ranked = SparsebertPredictor(models["text-classification"], "text-classification", top_k=None)(
        numpy_batch(text=TEXTS))
    assert list(ranked["labels"]) == [[r["label"] for r in pipe["text-classification"](t, top_k=None)]
                                      for t in TEXTS]

    tags = SparsebertPredictor(models["token-classification"], "token-classification")(numpy_batch(text=TEXTS))
    assert list(tags["entities"]) == [pipe["token-classification"](t) for t in TEXTS]

    queries = [f"question {i}?" for i in range(len(TEXTS))]
    scores = SparsebertPredictor(models["rerank"], "rerank", raw_scores=True)(numpy_batch(query=queries, text=TEXTS))
    assert scores["score"].tolist() == [pipe["rerank"]([(q, t)], raw_scores=True)[0]["score"]
                                        for q, t in zip(queries, TEXTS)]

    questions = ["Who sat on the mat?"] * 3
    answers = SparsebertPredictor(models["question-answering"], "question-answering")(
        numpy_batch(question=questions, context=TEXTS[:3]))
    for i in range(3):
        expected = pipe["question-answering"](question=questions[i], context=TEXTS[i])
        assert {key: answers[key][i] for key in ("answer", "score", "start", "end")} == expected


def test_pandas_batches(models):
    pandas = pytest.importorskip("pandas")
    frame = pandas.DataFrame({"body": TEXTS[:4], "label": ["a", "b", "c", "d"]})
    out = SparsebertPredictor(models["text-classification"], "text-classification",
                              columns={"text": "body", "label": "predicted", "score": "confidence"})(frame)
    pipe = sparsebert.pipeline("text-classification", models["text-classification"])
    assert list(out.columns) == ["body", "label", "predicted", "confidence"]
    assert out["label"].tolist() == ["a", "b", "c", "d"]  # the dataset's own label, untouched
    assert out["predicted"].tolist() == [pipe(t)["label"] for t in TEXTS[:4]]


@pytest.mark.parametrize("make, call, error, fragment", [
    (dict(task="fill-mask"), None, ValueError, "runs the tasks"),
    (dict(task="rerank", top_k=2), None, ValueError, "one result per row: top_k"),
    (dict(task="sentence-embedding", columns={"txt": "body"}), None, ValueError, "got 'txt'"),
    (dict(task="sentence-embedding", pipeline_batch_size=0), None, ValueError, "pipeline_batch_size"),
    (dict(task="sentence-embedding"), dict(body=["x"]), ValueError, "no column 'text' (its columns: 'body')"),
    (dict(task="sentence-embedding"), dict(text=["x", None]), TypeError, "row 1 of the batch holds NoneType"),
    (dict(task="sentence-embedding"), dict(text=["x"], embedding=[0]), ValueError, "already has the column(s) "
                                                                                   "'embedding'"),
    (dict(task="sentence-embedding"), "not a batch", TypeError, "batch_format='numpy' or 'pandas'"),
])
def test_mistakes_are_named(models, make, call, error, fragment):
    with pytest.raises(error) as caught:
        model = models[make["task"]] if make["task"] in models else models["sentence-embedding"]
        predictor = SparsebertPredictor(model, **make)
        predictor(numpy_batch(**call) if isinstance(call, dict) else call)
    assert fragment in str(caught.value)


def test_the_model_is_loaded_once_per_predictor(models, monkeypatch):
    predictor = SparsebertPredictor(models["sentence-embedding"], "sentence-embedding", num_threads=1)
    monkeypatch.setattr("sparsebert.ray_data.pipeline", lambda *a, **k: pytest.fail("loaded again"))
    for _ in range(3):
        assert predictor(numpy_batch(text=TEXTS[:2]))["embedding"].shape == (2, 384)


# ------------------------------------------------------------------------------------------------ on a Ray cluster

@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster for this module's tests (a start costs seconds); the workers import this sparsebert."""
    ray = pytest.importorskip("ray")
    package_root = str(Path(sparsebert.__file__).resolve().parent.parent)
    path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path, "HF_HUB_OFFLINE": "1"}})
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # what the test relies on: the dataset's order kept
    context.enable_progress_bars = False
    yield ray
    ray.shutdown()


@ON_RAY
@pytest.mark.parametrize("batch_format", ["numpy", "pandas"])
def test_map_batches_on_two_actors_keeps_rows_and_order(ray_cluster, models, batch_format):
    texts = [f"{i}: {TEXTS[i % len(TEXTS)]}" for i in range(60)]
    ds = ray_cluster.data.from_items([{"id": i, "text": t} for i, t in enumerate(texts)], override_num_blocks=6)
    ds = ds.map_batches(SparsebertPredictor, batch_size=7, concurrency=2, num_cpus=1, batch_format=batch_format,
                        fn_constructor_kwargs={"model": str(models["sentence-embedding"]),
                                               "task": "sentence-embedding"})
    rows = ds.take_all()
    alone = sparsebert.pipeline("sentence-embedding", models["sentence-embedding"])
    assert [row["id"] for row in rows] == list(range(60))
    np.testing.assert_array_equal(np.stack([row["embedding"] for row in rows]), np.stack(alone(texts)))


@ON_RAY
def test_map_batches_classification(ray_cluster, models):
    ds = ray_cluster.data.from_items([{"text": t} for t in TEXTS], override_num_blocks=3)
    rows = ds.map_batches(SparsebertPredictor, batch_size=4, concurrency=1, num_cpus=1,
                          fn_constructor_kwargs={"model": str(models["text-classification"]),
                                                 "task": "text-classification"}).take_all()
    alone = sparsebert.pipeline("text-classification", models["text-classification"])
    assert [(row["label"], row["score"]) for row in rows] == [(r["label"], r["score"]) for r in alone(TEXTS)]


@ON_RAY
def test_the_example_embeds_a_corpus(ray_cluster, models, tmp_path, monkeypatch, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    output = tmp_path / "embeddings.npy"
    monkeypatch.setattr(sys, "argv", ["ray_data_embed.py", str(models["sentence-embedding"]), str(corpus),
                                      str(output), "--concurrency", "2", "--batch-size", "5"])
    runpy.run_path(str(ROOT / "examples" / "ray_data_embed.py"), run_name="__main__")
    alone = sparsebert.pipeline("sentence-embedding", models["sentence-embedding"])
    np.testing.assert_array_equal(np.load(output), np.stack(alone(TEXTS)))
    assert f"{len(TEXTS)} texts -> {output}: float32 ({len(TEXTS)}, 384)" in capsys.readouterr().out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@ON_RAY
def test_ray_serve_two_replicas_answer_the_openai_client(ray_cluster, models):
    openai = pytest.importorskip("openai")
    httpx = pytest.importorskip("httpx")
    from ray import serve

    from sparsebert.serve.ray import REPLICA_HEADER, build_app

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(build_app({"minilm": models["sentence-embedding"]}, num_replicas=2,
                            ray_actor_options={"num_cpus": 0.5}), name="sparsebert", route_prefix="/")
        texts = TEXTS[:-1]  # the last is longer than MiniLM takes: the OpenAI route refuses it untruncated
        expected = np.stack(sparsebert.pipeline("sentence-embedding", models["sentence-embedding"])(texts))
        replicas = set()
        with openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0) as client:
            for i in range(16):
                raw = client.embeddings.with_raw_response.create(model="minilm", input=texts[i % 4:])
                replicas.add(raw.headers[REPLICA_HEADER])
                got = raw.parse()
                assert [d.index for d in got.data] == list(range(len(texts) - i % 4))
                np.testing.assert_array_equal(np.array([d.embedding for d in got.data], dtype=np.float32),
                                              expected[i % 4:])
        assert len(replicas) == 2, replicas  # Ray Serve's router spread the requests over both
    finally:
        serve.shutdown()
    with pytest.raises(httpx.ConnectError):  # the proxy is gone with Serve
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)


# ------------------------------------------------------------------------------------------- Ray Serve's builders

@pytest.mark.parametrize("args, fragment", [
    ({}, "args needs models"),
    ({"models": {"m": "m.sbert"}, "replicas": 2}, "unknown args replicas"),
    ({"models": {"m": "m.sbert"}, "settings": {"max_batch": 1}}, "unknown settings max_batch"),
    ({"models": {"m": "m.sbert"}, "settings": {"max_queue": 0}}, "max_queue must be a positive integer"),
    ({"models": {}}, "non-empty {name: path} mapping"),
    ({"models": {"m": "m.sbert"}, "num_replicas": 0}, "num_replicas must be a positive integer"),
])
def test_app_builder_names_mistakes(args, fragment):
    pytest.importorskip("ray.serve")
    from sparsebert.serve.ray import app_builder

    with pytest.raises(ValueError) as caught:
        app_builder(args)
    assert fragment in str(caught.value)


def test_the_example_config_is_a_valid_serve_config_whose_app_builds(models):
    yaml = pytest.importorskip("yaml")
    schema = pytest.importorskip("ray.serve.schema")
    from sparsebert.serve.ray import DEPLOYMENT, app_builder

    config = schema.ServeDeploySchema.model_validate(yaml.safe_load((ROOT / "examples" / "ray_serve.yaml").read_text()))
    app = config.applications[0]
    assert app.import_path == "sparsebert.serve.ray:app_builder"
    assert [d.name for d in app.deployments] == [DEPLOYMENT]  # the override reaches this deployment
    args = {**app.args, "models": {"minilm": str(models["sentence-embedding"])}}
    app_builder(args)  # its args build the application (the replicas load the model when run)


@ON_RAY
def test_sparsebert_serve_ray_until_sigterm(ray_cluster, models, tmp_path):
    httpx = pytest.importorskip("httpx")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(sparsebert.__file__).resolve().parent.parent)}
    command = [sys.executable, "-m", "sparsebert", "serve", str(models["sentence-embedding"]), "--ray", "--replicas",
               "2", "--port", str(port), "--ray-address", ray_cluster.get_runtime_context().gcs_address]
    log = tmp_path / "stderr.txt"
    with open(log, "w") as stderr, subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True,
                                                    env=env, stdin=subprocess.DEVNULL) as proc:
        try:
            ready = f"2 replica(s) on Ray Serve at http://127.0.0.1:{port}"
            assert any(ready in line for line in proc.stdout), log.read_text()  # printed once the app is ready
            response = httpx.post(f"http://127.0.0.1:{port}/embed", json={"inputs": TEXTS[:2]}, timeout=60)
            assert response.status_code == 200, response.text
            alone = sparsebert.pipeline("sentence-embedding", models["sentence-embedding"])
            np.testing.assert_array_equal(np.array(response.json(), dtype=np.float32), np.stack(alone(TEXTS[:2])))
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=120) == 0, log.read_text()[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
    with pytest.raises(httpx.ConnectError):  # Serve, whose only application it was, is gone
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)


@pytest.mark.parametrize("argv, fragment", [
    (["--replicas", "2"], "--replicas and --ray-address go with --ray"),
    (["--ray", "--port", "0"], "Ray Serve's proxy needs a port number (not 0)"),
])
def test_serve_ray_mistakes_are_one_line(models, capsys, argv, fragment):
    from sparsebert.cli import main

    assert main(["serve", str(models["sentence-embedding"]), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sparsebert serve: error: ") and fragment in err and "\n" not in err, err
