"""The export's destination, checked before anything is read or packed.

The file is written beside the destination and renamed over it (format/writer.py), so the destination must be
a new or regular file in an existing, writable directory: a directory would fail only at the end, and a device,
pipe or socket would be replaced by a regular file. It must not be one of the files the export reads (weights,
config, tokenizer, ONNX graph, calibration texts), whatever path leads to it (symbolic links, hard links, ``..``):
the packed model would replace the checkpoint it came from.
"""

from __future__ import annotations

import errno
import json
import os
from typing import Any

from ..tokenizer_text import TOKENIZER_FILE
from .hf_checkpoint import PYTORCH_BIN, SAFETENSORS, SAFETENSORS_INDEX

# What read_checkpoint may read in a checkpoint directory, besides the shards an index names and the
# sentence-transformers modules' own config.json.
DIRECTORY_FILES = ("config.json", SAFETENSORS, SAFETENSORS_INDEX, PYTORCH_BIN, TOKENIZER_FILE, "modules.json",
                   "sentence_bert_config.json")


def check_destination(out_path: str | os.PathLike, reads: list[str]) -> None:
    """OSError or ValueError unless ``out_path`` can take the packed model; ``reads``: the files the export
    reads (``files_read``)."""
    path = os.fspath(out_path)
    out_dir = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(out_dir):
        raise FileNotFoundError(f"output directory does not exist: {out_dir}")
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, "is a directory; name the .sbert file to write", path)
    if os.path.exists(path) and not os.path.isfile(path):
        raise ValueError(f"{path} is not a regular file (a device, pipe or socket); the export would replace it")
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, "cannot create files in this directory", out_dir)
    try:
        written = os.stat(path)
    except FileNotFoundError:
        return  # a new file cannot be one the export reads
    for source in reads:
        try:
            same = os.path.samestat(written, os.stat(source))
        except OSError:
            continue  # not there: nothing to overwrite
        if same:
            which = "" if os.path.abspath(source) == os.path.abspath(path) else f" ({source})"
            raise ValueError(f"the destination {path} is a file the export reads{which}; write the packed model "
                             "to another file")


def files_read(source: Any, tokenizer: Any = None, config: Any = None, calibration: Any = None) -> list[str]:
    """The files ``export(source, tokenizer=, config=, calibration=)`` may read (some may not exist)."""
    paths = [os.fspath(p) for p in (config, calibration) if isinstance(p, (str, os.PathLike))]
    if isinstance(tokenizer, (str, os.PathLike)):
        directory = os.path.isdir(tokenizer)
        paths.append(os.path.join(tokenizer, TOKENIZER_FILE) if directory else os.fspath(tokenizer))
    if not isinstance(source, (str, os.PathLike)):
        return paths  # a model object: no files
    source = os.fspath(source)
    if source.lower().endswith(".onnx"):
        beside = os.path.dirname(os.path.abspath(source))
        return [*paths, source, os.path.join(beside, "config.json"), os.path.join(beside, TOKENIZER_FILE)]
    if not os.path.isdir(source):
        return paths
    paths += [os.path.join(source, name) for name in DIRECTORY_FILES]
    index = _json_or_none(os.path.join(source, SAFETENSORS_INDEX))
    if isinstance(index, dict) and isinstance(index.get("weight_map"), dict):
        paths += [os.path.join(source, str(shard)) for shard in index["weight_map"].values()]
    modules = _json_or_none(os.path.join(source, "modules.json"))
    for module in modules if isinstance(modules, list) else []:
        if isinstance(module, dict) and module.get("path"):
            paths.append(os.path.join(source, str(module["path"]), "config.json"))
    return paths


def _json_or_none(path: str) -> Any:
    # Only to list files: the readers report a bad file themselves.
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError, RecursionError):
        return None
