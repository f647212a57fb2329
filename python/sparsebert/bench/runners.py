"""One runner per engine: a callable that runs one inference on prepared inputs, nothing else.

Everything that is not inference (building sessions, converting inputs to each engine's types, setting
thread counts) happens when the runner is made, so the timed call measures only the engine.  Inputs are
int64 ``[batch, seq]`` arrays named like ``engine.INPUT_NAMES``; sparsebert takes them as is (it converts to
int32 itself, as a user's call would).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._version import __version__
from ..convert import export
from ..engine import SparseEngine
from ..format import read_model
from .defaults import INPUT_NAMES, PEERS
from .models import to_transformers
from .onnx_export import bert_outputs

LABELS = {"sparsebert": "sparsebert", "onnxruntime": "ONNX Runtime", "pytorch": "PyTorch eager",
          "deepsparse": "DeepSparse", "sparsebert_fp32": "sparsebert fp32",
          "onnxruntime_int8": "ONNX Runtime int8 (dynamic)"}
INT8_RECIPE = "quantize_dynamic(weight_type=QInt8, per_channel=True)"


@dataclass
class Runner:
    name: str  # one of PEERS
    label: str  # for tables: engine and version
    run: Callable[[], Any]  # one inference on the prepared inputs
    hidden: Callable[[Any], np.ndarray]  # last_hidden_state out of run()'s result, as float32 numpy
    info: dict[str, Any] = field(default_factory=dict)  # recorded in the JSON (version, ISA, threads, options)
    engine: Any = None  # the sparsebert SparseEngine, for its per-op profile
    self_timed: bool = False  # run() returns the milliseconds measured where the work ran (another process)
    close: Callable[[], None] | None = None  # to release what the engine holds (a child process)


def make_inputs(batch: int, seq: int, vocab_size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random ids, a full attention mask, segment 0: the inputs every engine gets (int64, as ONNX expects)."""
    rng = np.random.default_rng(seed)
    # Ids from the middle of the vocabulary, as a tokenizer's would be; values do not change the work.
    low, high = min(1000, vocab_size // 2), min(2000, vocab_size)
    ids = rng.integers(low, high, (batch, seq), dtype=np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}


def sparsebert_runner(path: str, inputs: dict[str, np.ndarray], threads: int, isa: str | None = None) -> Runner:
    engine = SparseEngine.load(path, num_threads=threads, isa=isa)
    how = engine.isa + (", bf16 attention" if engine.attention == "bf16" else "")
    return Runner("sparsebert", f"sparsebert {__version__} ({how})", lambda: engine.run(inputs),
                  lambda out: out["last_hidden_state"],
                  {"version": __version__, "isa": engine.isa, "attention": engine.attention,
                   "threads": engine.num_threads}, engine)


def quantize_onnx_int8(onnx_path: str, workdir: str) -> str:
    """ONNX Runtime's own dynamic int8 recipe applied to the fp32 graph (int8 weights per channel, activations
    quantized per call): the int8 alternative users already have. Returns the quantized file's path."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    q_path = os.path.join(workdir, "model.int8.onnx")
    quantize_dynamic(onnx_path, q_path, weight_type=QuantType.QInt8, per_channel=True)
    return q_path


def onnxruntime_int8_runner(onnx_path: str, inputs: dict[str, np.ndarray], threads: int, workdir: str) -> Runner:
    """ONNX Runtime on ``quantize_onnx_int8`` of the fp32 graph."""
    return _as_int8(onnxruntime_runner(quantize_onnx_int8(onnx_path, workdir), inputs, threads))


def _as_int8(runner: Runner) -> Runner:
    runner.name, runner.label = "onnxruntime_int8", runner.label + " int8 dynamic"
    runner.info["quantization"] = INT8_RECIPE
    return runner


def write_fp32_twin(packed: Any, workdir: str) -> str:
    """The fp32 twin of an int8 packed model: the same (dequantized) weights in fp32 layouts. Returns its path."""
    path = os.path.join(workdir, "fp32.sbert")
    export(to_transformers(packed), path, verbose=False, compact=False)
    return path


def sparsebert_fp32_runner(packed: Any, inputs: dict[str, np.ndarray], threads: int, isa: str | None,
                           workdir: str) -> Runner:
    """sparsebert on the fp32 twin of an int8 file."""
    return _as_fp32(sparsebert_runner(write_fp32_twin(packed, workdir), inputs, threads, isa))


def _as_fp32(runner: Runner) -> Runner:
    runner.name, runner.label, runner.engine = "sparsebert_fp32", runner.label + " fp32", None
    return runner


def onnxruntime_runner(onnx_path: str, inputs: dict[str, np.ndarray], threads: int) -> Runner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    # T threads inside an op, none across ops: one inference at a time, like the other engines.
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # warnings about unused initializers etc. are not results
    session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
    feeds = {name: inputs[name] for name in (i.name for i in session.get_inputs())}
    return Runner("onnxruntime", f"ONNX Runtime {ort.__version__}", lambda: session.run(None, feeds),
                  lambda out: out[0],
                  {"version": ort.__version__, "threads": threads, "inter_op_threads": 1,
                   "execution_mode": "sequential", "graph_optimization": "all",
                   "providers": session.get_providers()})


def pytorch_runner(module: Any, inputs: dict[str, np.ndarray], threads: int) -> Runner:
    """``module`` is ``onnx_export.bert_outputs(...)``: the graph exported to ONNX, run eagerly."""
    import torch

    torch.set_num_threads(threads)  # process-wide; the harness runs one configuration per process
    args = tuple(torch.from_numpy(inputs[name]) for name in INPUT_NAMES)

    def run() -> Any:
        with torch.inference_mode():
            return module(*args)

    return Runner("pytorch", f"PyTorch {torch.__version__} eager", run, lambda out: out[0].numpy(),
                  {"version": torch.__version__, "threads": torch.get_num_threads(), "mode": "eager, inference_mode",
                   "attention": "eager"})


def runner_from_files(name: str, files: dict[str, str], inputs: dict[str, np.ndarray], threads: int,
                      isa: str | None = None, module: Any = None) -> Runner:
    """The runner of engine ``name`` on files written beforehand (``files``: "sbert", and as the engines need them
    "fp32_sbert", "onnx", "onnx_int8"), so that any process can build it: the harness's own or an isolated
    worker's. PyTorch runs ``module`` (``onnx_export.bert_outputs``), else the model rebuilt from "sbert"."""
    if name == "sparsebert":
        return sparsebert_runner(files["sbert"], inputs, threads, isa)
    if name == "sparsebert_fp32":
        return _as_fp32(sparsebert_runner(files["fp32_sbert"], inputs, threads, isa))
    if name == "onnxruntime":
        return onnxruntime_runner(files["onnx"], inputs, threads)
    if name == "onnxruntime_int8":
        return _as_int8(onnxruntime_runner(files["onnx_int8"], inputs, threads))
    if name == "pytorch":
        if module is None:
            module = bert_outputs(to_transformers(files["sbert"]), read_model(files["sbert"]).config)
        return pytorch_runner(module, inputs, threads)
    raise ValueError(f"no runner for engine {name!r}")


__all__ = ["INT8_RECIPE", "LABELS", "PEERS", "Runner", "make_inputs", "onnxruntime_int8_runner", "onnxruntime_runner",
           "pytorch_runner", "quantize_onnx_int8", "runner_from_files", "sparsebert_fp32_runner", "sparsebert_runner",
           "write_fp32_twin"]
