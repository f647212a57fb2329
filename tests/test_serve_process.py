"""``sparsebert serve`` as a process: SIGTERM with requests in flight loses none and exits 0; a user's mistakes are
one line and exit 2."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

import sparsebert
from serve_helpers import export_models



def serve(*args, env=None):
    # The sparsebert this test imports (the installed package in CI, the source tree with a built _core here).
    environment = {**os.environ, "PYTHONPATH": str(Path(sparsebert.__file__).resolve().parents[1]), **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "sparsebert", "serve", *map(str, args)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)


def listening_url(proc) -> str:
    while True:
        line = proc.stderr.readline()
        assert line, f"the server exited ({proc.wait()}) before listening"
        if line.startswith("sparsebert serve: listening on "):
            return line.split()[-1]


@pytest.fixture(scope="module")
def model(tmp_path_factory, minilm_dir):
    return export_models(tmp_path_factory.mktemp("serve_process"), minilm_dir, ("emb",))["emb"]


def test_sigterm_finishes_every_admitted_request(model):
    proc = serve(model, "--port", 0, "--threads", 1, "--max-wait-ms", 400, "--api-key", "k")
    try:
        url = listening_url(proc)
        headers = {"Authorization": "Bearer k"}
        with httpx.Client(base_url=url, timeout=60, headers=headers) as client:
            deadline = time.monotonic() + 60
            while client.get("/health").status_code != 200:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                pending = [pool.submit(client.post, "/embed", json={"inputs": f"text number {i}"}) for i in range(8)]
                time.sleep(0.2)  # admitted, waiting in the batcher's 400 ms window
                proc.send_signal(signal.SIGTERM)
                answers = [p.result() for p in pending]
        assert [a.status_code for a in answers] == [200] * 8
        assert all(len(a.json()[0]) == 40 for a in answers)
        code = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate(timeout=60)  # and closes the pipes
    assert code == 0, err


@pytest.mark.parametrize("args, words", [
    (["missing.sbert"], "missing.sbert"),
    (["--model", "nameless"], "NAME=PATH"),
    ([], "name a model"),
    (["--port", "70000", "x.sbert"], "65535"),
    (["--max-wait-ms", "-1", "x.sbert"], ">= 0"),
])
def test_mistakes_are_one_line(tmp_path, args, words):
    proc = serve(*args)
    _, err = proc.communicate(timeout=120)
    lines = err.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("sparsebert serve: error: ") and words in lines[0], lines[0]


def test_a_busy_port_is_one_line(model):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        proc = serve(model, "--port", taken.getsockname()[1])
        _, err = proc.communicate(timeout=120)
    lines = err.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "in use" in lines[0].lower(), err


@pytest.mark.parametrize("args, env", [(["--attention", "bf16"], {}), ([], {"SPARSEBERT_ATTENTION": "bf16"})])
def test_attention_that_cannot_run_is_one_line(model, args, env):
    # On the avx2 path bf16 attention is refused (and on a CPU without AMX, everywhere): before the server starts,
    # whether the flag or the environment asked for it.
    proc = serve(model, *args, "--port", 0, env={"SPARSEBERT_ISA": "avx2", **env})
    _, err = proc.communicate(timeout=120)
    lines = err.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("sparsebert serve: error: ") and "bf16 attention" in lines[0], lines[0]


@pytest.mark.skipif(sparsebert.engine.bf16_attention_unavailable() is not None,
                    reason=f"bf16 attention: {sparsebert.engine.bf16_attention_unavailable()}")
def test_served_with_bf16_attention(model):
    proc = serve(model, "--attention", "bf16", "--port", 0)
    try:
        url = listening_url(proc)
        info = httpx.get(url + "/info", timeout=60).json()
        assert info["attention"] == "bf16"
        vectors = httpx.post(url + "/v1/embeddings", json={"input": ["a test", "another"], "model": info["model_id"]},
                             timeout=60).json()["data"]
        hidden = sparsebert.SparseEngine.load(model, num_threads=1).config["hidden_size"]
        assert len(vectors) == 2 and all(len(v["embedding"]) == hidden for v in vectors)
        assert all(np.isfinite(v["embedding"]).all() for v in vectors)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
