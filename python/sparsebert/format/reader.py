"""Read and fully validate a ``.sbert`` file (see spec.py for the byte layout).

Nothing is trusted: every length, offset and index is checked here, before any
array can reach the C++ extension, and every refusal is a ModelFormatError that
names the file.  The file is memory-mapped, so the arrays are read-only views of
it and stay 64-byte aligned; the mapping lives as long as any array does.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ModelFormatError
from . import layouts, spec


@dataclass(frozen=True)
class PackedModel:
    """The decoded contents of a ``.sbert`` file."""

    config: dict[str, Any]
    linears: dict[str, dict[str, Any]]  # name -> layout, shape, nnz, sparsity, block_fill, bytes
    tensors: dict[str, np.ndarray] = field(repr=False)  # read-only arrays
    header: dict[str, Any] = field(repr=False)
    path: str = ""
    format_version: int = spec.FORMAT_VERSION
    layout_revision: int = spec.LAYOUT_REVISION

    @property
    def producer(self) -> dict[str, Any]:
        return self.header["producer"]

    def linear_arrays(self, name: str) -> dict[str, np.ndarray]:
        """The stored arrays of one packed linear, keyed by suffix (``weight``, ``row_ptr``, ..., ``bias``)."""
        layout = self.linears[name]["layout"]
        return {s: self.tensors[f"{name}.{s}"] for s in layouts.array_suffixes(layout)}


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # A repeated key would let one tensor entry silently shadow another.
    result = {}
    for key, value in pairs:
        if key in result:
            raise ModelFormatError(f"header repeats the key {key!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> None:
    raise ModelFormatError(f"header contains {name}, which is not JSON")


def _parse_header(raw: bytes) -> Any:
    try:
        text = raw.decode("utf-8")
        return json.loads(text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ModelFormatError(f"header is not valid UTF-8 JSON ({exc})") from None


def _check_preamble(mm: mmap.mmap, size: int) -> int:
    magic, format_version, layout_revision, header_nbytes = spec.PREAMBLE.unpack_from(mm, 0)
    if magic != spec.MAGIC:
        raise ModelFormatError(f"not a .sbert file (magic {magic!r}, expected {spec.MAGIC!r})")
    for what, found, known in (
        ("format_version", format_version, spec.FORMAT_VERSION),
        ("layout_revision", layout_revision, spec.LAYOUT_REVISION),
    ):
        if found == 0:
            raise ModelFormatError(f"invalid {what} 0")
        if found > known:
            raise ModelFormatError(
                f"file has {what} {found}, newer than this sparsebert supports ({what} {known}); "
                "upgrade sparsebert to read it"
            )
    if header_nbytes > spec.MAX_HEADER_NBYTES:
        raise ModelFormatError(f"header length {header_nbytes} exceeds the limit of {spec.MAX_HEADER_NBYTES} bytes")
    if spec.PREAMBLE.size + header_nbytes > size:
        raise ModelFormatError(f"header length {header_nbytes} runs past the end of the file ({size} bytes)")
    return header_nbytes


def _open_mapped(path: str) -> tuple[mmap.mmap, int]:
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise ModelFormatError("no such file", path) from None
    except IsADirectoryError:
        raise ModelFormatError("is a directory, not a .sbert file", path) from None
    except OSError as exc:
        raise ModelFormatError(f"cannot open ({exc.strerror})", path) from None
    with f:
        size = os.fstat(f.fileno()).st_size
        if size < spec.PREAMBLE.size:
            raise ModelFormatError(f"file is too short ({size} bytes) to be a .sbert file", path)
        # The mapping keeps its own reference to the file, so closing f is fine.
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ), size


def read_model(path: str | os.PathLike, verify_crc: bool = True) -> PackedModel:
    """Map, validate and decode a ``.sbert`` file; raise ModelFormatError if anything is off."""
    path = os.fspath(path)
    mm, size = _open_mapped(path)
    try:
        return _decode(mm, size, path, verify_crc)
    except ModelFormatError as exc:
        _close_quietly(mm)
        if exc.path is not None:
            raise
        raise ModelFormatError(exc.reason, path) from None
    except BaseException:
        _close_quietly(mm)
        raise


def _close_quietly(mm: mmap.mmap) -> None:
    try:
        mm.close()
    except BufferError:
        pass  # arrays built before the failure still view it; it closes when they go


def _decode(mm: mmap.mmap, size: int, path: str, verify_crc: bool) -> PackedModel:
    header_nbytes = _check_preamble(mm, size)
    _, format_version, layout_revision, _ = spec.PREAMBLE.unpack_from(mm, 0)
    header_end = spec.PREAMBLE.size + header_nbytes
    header = _parse_header(mm[spec.PREAMBLE.size : header_end])
    spec.validate_header(header)

    start = spec.data_start(header_nbytes)
    expected = start + header["data_nbytes"]
    if size < expected:
        raise ModelFormatError(f"file is truncated: {size} bytes, but its header describes {expected}")
    if size > expected:
        raise ModelFormatError(f"{size - expected} bytes of trailing data after the end of the tensor data")
    if mm[header_end:start].strip(b"\0"):
        raise ModelFormatError("non-zero bytes in the padding after the header")

    tensors = {}
    with memoryview(mm) as view:
        for name, entry in header["tensors"].items():
            begin, nbytes = start + entry["offset"], entry["nbytes"]
            if verify_crc:
                crc = zlib.crc32(view[begin : begin + nbytes]) & 0xFFFFFFFF
                if crc != entry["crc32"]:
                    raise ModelFormatError(
                        f"tensor {name!r} fails its CRC check (stored {entry['crc32']:#010x}, "
                        f"computed {crc:#010x}): the file is corrupt"
                    )
            tensors[name] = _view_array(mm, begin, entry)

    try:
        layouts.check_model_linears(header["linears"], tensors)
    except ValueError as exc:
        raise ModelFormatError(str(exc)) from None

    return PackedModel(
        config=header["config"],
        linears=header["linears"],
        tensors=tensors,
        header=header,
        path=path,
        format_version=format_version,
        layout_revision=layout_revision,
    )


def _view_array(mm: mmap.mmap, begin: int, entry: dict[str, Any]) -> np.ndarray:
    dtype = spec.DTYPES[entry["dtype"]]
    count = math.prod(entry["shape"])
    if count == 0:
        array = np.empty(entry["shape"], dtype=dtype)
        array.flags.writeable = False
        return array
    return np.frombuffer(mm, dtype=dtype, count=count, offset=begin).reshape(entry["shape"])
