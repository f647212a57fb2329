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

    def float32_array(self, name: str) -> np.ndarray:
        """A plain array (an embedding table, a LayerNorm weight) as the engine takes it: float32. A float16 table
        is widened (exactly: float32 holds every float16 value) into a new array, made on each call so that it lives
        only as long as the caller keeps it, while ``tensors`` keeps the file's bytes as they are."""
        array = self.tensors[name]
        return array.astype(np.float32) if array.dtype == spec.DTYPES["float16"] else array

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


def _check_preamble(mm: mmap.mmap, size: int) -> tuple[int, int]:
    """Check everything before the header; return (format_version, header_nbytes)."""
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
    if spec.header_offset(format_version) + header_nbytes > size:
        raise ModelFormatError(f"header length {header_nbytes} runs past the end of the file ({size} bytes)")
    return format_version, header_nbytes


def _check_header_crc(mm: mmap.mmap, format_version: int, header: bytes) -> None:
    if format_version < spec.FIRST_CHECKED_VERSION:
        return  # version 1 files have no header checksum; their tensors still have theirs
    stored, reserved = spec.HEADER_CHECK.unpack_from(mm, spec.PREAMBLE.size)
    computed = spec.header_crc32(mm[: spec.PREAMBLE.size], header)
    if stored != computed:
        raise ModelFormatError(
            f"header fails its CRC check (stored {stored:#010x}, computed {computed:#010x}): the file is corrupt"
        )
    if reserved != 0:
        raise ModelFormatError(f"reserved preamble word is {reserved:#010x}, expected 0")


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
    format_version, header_nbytes = _check_preamble(mm, size)
    layout_revision = spec.PREAMBLE.unpack_from(mm, 0)[2]
    header_begin = spec.header_offset(format_version)
    header_end = header_begin + header_nbytes
    raw_header = mm[header_begin:header_end]
    _check_header_crc(mm, format_version, raw_header)
    header = _parse_header(raw_header)
    spec.validate_header(header)
    needed = spec.layout_revision(header["tensors"])
    if layout_revision < needed:
        raise ModelFormatError(f"file stores float16 tensors, which need layout_revision {needed}, but has "
                               f"layout_revision {layout_revision}")

    start = spec.data_start(header_nbytes, format_version)
    expected = start + header["data_nbytes"]
    if size < expected:
        raise ModelFormatError(f"file is truncated: {size} bytes, but its header describes {expected}")
    if size > expected:
        raise ModelFormatError(f"{size - expected} bytes of trailing data after the end of the tensor data")
    if mm[header_end:start].strip(b"\0"):
        raise ModelFormatError("non-zero bytes in the padding after the header")

    _check_zero_gaps(mm, start, header["tensors"])
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


def _check_zero_gaps(mm: mmap.mmap, start: int, entries: dict[str, dict[str, Any]]) -> None:
    # The alignment gaps between tensors are zeros, as the writer leaves them: with the CRCs this makes every
    # byte of a file checked, so no flipped bit anywhere goes unnoticed.
    cursor = 0
    for entry in sorted(entries.values(), key=lambda e: e["offset"]):
        if entry["offset"] > cursor and mm[start + cursor : start + entry["offset"]].strip(b"\0"):
            raise ModelFormatError(f"non-zero bytes in the padding at data offset {cursor}")
        cursor = max(cursor, entry["offset"] + entry["nbytes"])


def _view_array(mm: mmap.mmap, begin: int, entry: dict[str, Any]) -> np.ndarray:
    dtype = spec.DTYPES[entry["dtype"]]
    count = math.prod(entry["shape"])
    if count == 0:
        array = np.empty(entry["shape"], dtype=dtype)
        array.flags.writeable = False
        return array
    return np.frombuffer(mm, dtype=dtype, count=count, offset=begin).reshape(entry["shape"])
