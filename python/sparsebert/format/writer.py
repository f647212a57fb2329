"""Write a ``.sbert`` file atomically (see spec.py for the byte layout)."""

from __future__ import annotations

import json
import os
import secrets
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import layouts, spec

def _json_default(obj: Any) -> Any:
    # numpy scalars sneak into metadata (e.g. nnz from .sum()); store them as plain numbers.
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _storable(name: str, array: Any) -> np.ndarray:
    if not isinstance(name, str) or not name:
        raise ValueError(f"tensor names must be non-empty strings, got {name!r}")
    if not isinstance(array, np.ndarray):
        raise TypeError(f"tensor {name!r} must be a numpy array, got {type(array).__name__}")
    kind = spec.dtype_name(array.dtype)
    if kind is None:
        raise ValueError(f"tensor {name!r} has dtype {array.dtype}; storable dtypes: {', '.join(spec.DTYPES)}")
    # Files are little-endian and dense whatever the caller's array looks like.
    return np.ascontiguousarray(array, dtype=spec.DTYPES[kind])


def _as_bytes(array: np.ndarray) -> memoryview:
    return memoryview(array.reshape(-1).view(np.uint8))


def write_model(
    path: str | os.PathLike,
    config: Mapping[str, Any],
    linears: Mapping[str, Mapping[str, Any]],
    tensors: Mapping[str, np.ndarray],
    producer: Mapping[str, Any],
    tokenizer: str | None = None,
) -> None:
    """Write a model file; on any failure an existing file at ``path`` is left untouched.

    Raises ValueError (before creating anything) if the result would not be a
    file ``read_model`` accepts: the same header checks run on both sides.
    """
    path = os.fspath(path)
    arrays = {name: _storable(name, array) for name, array in tensors.items()}
    entries, cursor = {}, 0
    for name, array in arrays.items():
        offset = spec.align_up(cursor)
        entries[name] = {
            "dtype": spec.dtype_name(array.dtype),
            "shape": list(array.shape),
            "offset": offset,
            "nbytes": array.nbytes,
            "crc32": zlib.crc32(_as_bytes(array)) & 0xFFFFFFFF,
        }
        cursor = max(cursor, offset + array.nbytes)
    header = {
        "config": dict(config),
        "tensors": entries,
        "linears": {name: dict(meta) for name, meta in linears.items()},
        "data_nbytes": cursor,
        "producer": dict(producer),
    }
    if tokenizer is not None:
        header["tokenizer"] = tokenizer  # a tokenizer.json text (sparsebert.pipelines)
    header_bytes = json.dumps(
        header, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_json_default
    ).encode("utf-8")
    if len(header_bytes) > spec.MAX_HEADER_NBYTES:
        raise ValueError(f"header of {len(header_bytes)} bytes exceeds {spec.MAX_HEADER_NBYTES}")
    try:
        # Validate what a reader will parse, not the Python objects we hold.
        parsed = json.loads(header_bytes)
        spec.validate_header(parsed)
        layouts.check_model_linears(parsed["linears"], arrays)
    except ValueError as exc:  # ModelFormatError from validate_header is a ValueError too
        raise ValueError(f"refusing to write {path}: {exc}") from None

    # The oldest revision that knows every stored dtype, so that older readers read what they can.
    revision = spec.layout_revision(entries)
    preamble = spec.PREAMBLE.pack(spec.MAGIC, spec.FORMAT_VERSION, revision, len(header_bytes))
    check = spec.HEADER_CHECK.pack(spec.header_crc32(preamble, header_bytes), 0)
    header_pad = spec.data_start(len(header_bytes)) - spec.header_offset() - len(header_bytes)
    _write_atomically(path, preamble + check + header_bytes + bytes(header_pad), arrays, entries)


def _write_atomically(path: str, head: bytes, arrays: dict[str, np.ndarray], entries: dict[str, dict]) -> None:
    # The temp file lives next to the destination so os.replace is a same-filesystem rename:
    # readers see either the old file or the complete new one, never a partial write.
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = _create_temp(directory, os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(head)
            written = 0
            for name, array in arrays.items():
                offset = entries[name]["offset"]
                if offset > written:
                    f.write(bytes(offset - written))
                f.write(_as_bytes(array))
                written = offset + array.nbytes
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(directory)


def _create_temp(directory: str, name: str) -> tuple[int, str]:
    # Not tempfile.mkstemp: its files are mode 0600, while the result should get the
    # permissions a plain open() gives (0666 minus the umask), which os.open applies.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = os.path.join(directory, f".{name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue


def _fsync_directory(directory: str) -> None:
    # Makes the rename itself durable; not every platform/filesystem allows it.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
