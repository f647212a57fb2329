"""The tests' servers: the real app on uvicorn, on a free port of 127.0.0.1, in a thread of the test process; and the
small packed models they serve (random BERTs over MiniLM's tokenizer, made once per module)."""

from __future__ import annotations

import threading
import time

import uvicorn

import sparsebert
from sparsebert.serve import ServeSettings, create_app
from sparsebert.serve.server import bind

from conftest import checkpoint_with_tokenizer

# name -> (checkpoint kind, config)
MODEL_KINDS = {
    "emb": ("base", {}),
    "cls": ("sequence_classification", {}),
    "reranker": ("sequence_classification", {"num_labels": 1}),
    "ner": ("token_classification", {}),
    "qa": ("question_answering", {}),
}


def export_models(root, minilm_dir, names=tuple(MODEL_KINDS)) -> dict[str, str]:
    paths = {}
    for name in names:
        kind, config = MODEL_KINDS[name]
        directory = root / name
        directory.mkdir()
        _, ckpt = checkpoint_with_tokenizer(kind, directory, minilm_dir, **config)
        paths[name] = str(root / f"{name}.sbert")
        sparsebert.export(ckpt, paths[name], verbose=False)
    return paths


class ServerThread:
    """``create_app(models, settings)`` served by uvicorn until ``stop()``; ``url`` is its base URL."""

    def __init__(self, models, settings: ServeSettings | None = None):
        self.app = create_app(models, settings or ServeSettings(num_threads=1))
        sock = bind("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 120
        while not self.server.started:
            assert self.thread.is_alive(), "the server failed to start"
            assert time.monotonic() < deadline, "the server did not start in time"
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(60)
        assert not self.thread.is_alive()


def metric(text: str, name: str, **labels) -> float:
    """The value of sample ``name`` with ``labels`` in Prometheus exposition ``text`` (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        sample, _, rest = key.partition("{")
        if sample == name and all(f'{k}="{v}"' in rest for k, v in labels.items()) and (want or not rest):
            return float(value)
    return 0.0
