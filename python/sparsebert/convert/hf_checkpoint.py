"""Read a transformers BERT-family checkpoint into a ``Checkpoint`` (checkpoint.py): its config, its weights and
what model it is.

Sources: a model object (any class in ARCHITECTURES) or a checkpoint directory with ``config.json`` and
``model.safetensors`` (read with ``safetensors.numpy``, so no torch is needed) or ``pytorch_model.bin``
(``torch.load(weights_only=True)``: never unpickle code).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from ..errors import UnsupportedModelError
from ..extras import require
from ..spelling import option
from . import hf_config, qat
from .checkpoint import (ARCHITECTURES, Checkpoint, architecture_of_weights, canonical_weights, read_config_json,
                         supported_list)

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PYTORCH_BIN = "pytorch_model.bin"


# ---------------------------------------------------------------------------------------------- loading


def load_checkpoint(source: Any) -> Checkpoint:
    if isinstance(source, (str, os.PathLike)):
        return _load_directory(os.fspath(source))
    if hasattr(source, "state_dict") and hasattr(source, "config"):
        return _load_model_object(source)
    raise TypeError(
        f"export() takes a checkpoint directory or a transformers model, got {type(source).__name__}"
    )


def _architecture_of_class(model: Any) -> str:
    for cls in type(model).__mro__:
        if cls.__name__ in ARCHITECTURES:
            return cls.__name__
    raise UnsupportedModelError(f"cannot export a {type(model).__name__}; supported: {supported_list()}")


def _load_model_object(model: Any) -> Checkpoint:
    torch = require("torch", "exporting a model object")

    architecture = _architecture_of_class(model)
    family, head = ARCHITECTURES[architecture]
    name = getattr(model.config, "_name_or_path", "") or ""
    source = f"{type(model).__name__}" + (f" ({name})" if name else "")
    raw, scales, read = qat.torch_quantized_modules(model)
    covered = tuple(m + "._packed_params." for m in read)
    state = model.state_dict()
    zero_points = set(qat.zero_point_names(state))
    for key, tensor in state.items():
        if key.startswith(covered):
            continue
        # Anything else quantized (a custom packing) has scales sparsebert does not know how to read: say so
        # instead of reporting missing weights.
        if "_packed_params" in key or (torch.is_tensor(tensor) and tensor.is_quantized):
            raise UnsupportedModelError(
                f"{type(model).__name__} holds torch-quantized weights that sparsebert cannot read ({key}); "
                f"export the float model (before quantization or QAT convert) with {option('quantize_int8')}")
        if torch.is_tensor(tensor) and (tensor.is_floating_point() or key in zero_points):
            # float32 on CPU is shared, not copied; half/bfloat16 weights are widened.
            raw[key] = tensor.detach().to("cpu", torch.float32).numpy()
    scales.update(qat.fake_quantized(raw, qat.fake_quant_ranges(model), source))
    weights, prefixed = canonical_weights(raw, family)
    return Checkpoint(model.config.to_dict(), weights, family, head, architecture, source, prefixed,
                      canonical_weights(scales, family)[0])


def _load_directory(path: str) -> Checkpoint:
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such checkpoint directory: {path}")
    if not os.path.isdir(path):
        raise UnsupportedModelError(f"{path} is not a directory; export a transformers checkpoint directory")
    try:
        config = read_config_json(os.path.join(path, "config.json"))
    except FileNotFoundError:
        raise UnsupportedModelError(f"{path} has no config.json; not a transformers checkpoint") from None
    # Refuse on the config alone before reading (possibly gigabytes of) weights.
    family = hf_config.family_of(config, path)
    hf_config.check_hf_config(config, family, path)
    architecture = _architecture_of_config(config, family, path)
    raw = _read_weights(path)
    scales = qat.fake_quantized(raw, None, path)
    weights, prefixed = canonical_weights(raw, family)
    if architecture is None:
        architecture = architecture_of_weights(weights, family)
    head = ARCHITECTURES[architecture][1]
    return Checkpoint(config, weights, family, head, architecture, path, prefixed, canonical_weights(scales, family)[0])


def _architecture_of_config(config: dict[str, Any], family: str, path: str) -> str | None:
    names = config.get("architectures") or []
    if not isinstance(names, list):
        raise UnsupportedModelError(f"{path}: config.json architectures must be a list, got {names!r}")
    if not names:
        return None
    if names[0] not in ARCHITECTURES:
        raise UnsupportedModelError(f"{path}: architecture {names[0]} is not supported; supported: {supported_list()}")
    if ARCHITECTURES[names[0]][0] != family:
        raise UnsupportedModelError(f"{path}: architecture {names[0]} does not match model_type {family!r}")
    return names[0]


def _read_weights(path: str) -> dict[str, np.ndarray]:
    single = os.path.join(path, SAFETENSORS)
    if os.path.isfile(single):
        return _read_safetensors(single)
    index = os.path.join(path, SAFETENSORS_INDEX)
    if os.path.isfile(index):
        try:
            with open(index, encoding="utf-8") as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            raise UnsupportedModelError(f"cannot read {index}: {type(exc).__name__}: {exc}") from None
        weights = {}
        for shard in shards:
            weights.update(_read_safetensors(os.path.join(path, shard)))
        return weights
    pickle_path = os.path.join(path, PYTORCH_BIN)
    if os.path.isfile(pickle_path):
        return _read_pytorch_bin(pickle_path)
    raise UnsupportedModelError(f"{path} holds no {SAFETENSORS}, {SAFETENSORS_INDEX} or {PYTORCH_BIN}")


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
    load_file = require("safetensors.numpy", f"reading {path}").load_file
    from safetensors import SafetensorError  # there: safetensors.numpy imported it

    try:
        return load_file(path)
    except SafetensorError as exc:
        raise UnsupportedModelError(f"cannot read {path}: {exc}") from None
    except TypeError:
        # numpy has no bfloat16: such files need torch to widen them.
        torch = require("torch", f"reading {path} (a dtype numpy lacks, such as bfloat16)")
        load_torch = require("safetensors.torch", f"reading {path}").load_file
        try:
            tensors = load_torch(path)
        except SafetensorError as exc2:
            raise UnsupportedModelError(f"cannot read {path}: {exc2}") from None
        return {n: t.to(torch.float32).numpy() for n, t in tensors.items() if t.is_floating_point()}


def _read_pytorch_bin(path: str) -> dict[str, np.ndarray]:
    torch = require("torch", f"reading {path} (or a model.safetensors in its place)")
    try:
        # weights_only: a checkpoint is data, never code to run.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for bad files
        raise UnsupportedModelError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None
    if not isinstance(state, dict):
        raise UnsupportedModelError(f"{path} does not hold a state dict")
    keep = set(qat.zero_point_names(state))  # integer, but read by qat.py
    return {n: t.to(torch.float32).numpy() for n, t in state.items()
            if torch.is_tensor(t) and (t.is_floating_point() or n in keep)}
