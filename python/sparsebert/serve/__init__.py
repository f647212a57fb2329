"""``sparsebert.serve``: an HTTP server for packed models — OpenAI's ``/v1/embeddings``, text-embeddings-inference's
``/embed``, ``/rerank``, ``/predict``, ``/info``, ``/health``, the pipelines' token classification and question
answering, Prometheus ``/metrics`` — with dynamic batching. Running it needs ``pip install "sparsebert[serve]"``;
importing it does not (FastAPI, uvicorn, pydantic and prometheus_client are imported when an app is made).

    from sparsebert.serve import ServeSettings, create_app
    app = create_app({"minilm": "minilm.sbert"}, ServeSettings(max_wait_ms=2))   # any ASGI server runs it
"""

from .app import create_app
from .registry import served_task
from .server import run_server
from .settings import API_KEY_ENV, ServeSettings

__all__ = ["API_KEY_ENV", "ServeSettings", "create_app", "run_server", "served_task"]
