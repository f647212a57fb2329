"""The ``.sbert`` container: byte layout, versions and the rules a header must obey.

::

    offset 0   8 bytes  magic  b"SPBERT\\x00\\x1a"
    offset 8   u32 LE   format_version   (container: header + table + data)
    offset 12  u32 LE   layout_revision  (meaning of the packed arrays, see layouts.py)
    offset 16  u64 LE   header_nbytes
    offset 24  u32 LE   header_crc32     CRC-32 of bytes 0-23 followed by the header bytes
    offset 28  u32 LE   reserved, zero
    offset 32           header: UTF-8 JSON, header_nbytes bytes, then zero padding to a multiple of 64
    data_start          tensor data; each tensor starts at a multiple of 64 from data_start, the gaps
                        between tensors are zeros, file size == data_start + data_nbytes

Format version 1 (files written before the header had a checksum) has no
``header_crc32`` / reserved words: its header starts at offset 24.  Readers
accept both; writers write version 2.  Each tensor carries its own CRC-32 in
the header, so with version 2 every byte of a file but the zero padding is
covered by a checksum.

The magic ends in ``\\x00\\x1a`` so that text-mode transfers and ``cat`` on a
terminal visibly break the file instead of silently passing it on.

The plain arrays are float32, except the embedding tables (``HALF_TABLES``), which may be stored as float16
(``array_dtypes``): they are most of a small model's file, and the reader widens them to float32, so the engine
computes as it does on float32 tables.  A file holding float16 tensors has layout revision 3, one without them
revision 2 (``layout_revision``), so files without float16 stay readable by sparsebert versions that know
revision 2, while those refuse a float16 file as newer than they know.

Both the writer and the reader run ``validate_header``: a file the writer
produces is always one the reader accepts, and a file the reader accepts is
complete enough to build an encoder from.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from .._native import core
from ..errors import ModelFormatError
from . import layouts

MAGIC = b"SPBERT\x00\x1a"
FORMAT_VERSION = 2
LAYOUT_REVISION = 3  # the newest this reader knows; 2: the block4_int8 layout and the int8 dtype; 3: float16
FLOAT16_REVISION = 3  # the revision that brought float16 (the embedding tables')
PLAIN_REVISION = 2  # what a file without float16 is written with, so that revision-2 readers still read it
PREAMBLE = struct.Struct("<8sIIQ")  # magic, format_version, layout_revision, header_nbytes
HEADER_CHECK = struct.Struct("<II")  # header_crc32, reserved (format version >= 2)
FIRST_CHECKED_VERSION = 2  # the first format version whose header has a CRC
ALIGNMENT = 64  # one cache line and the widest (AVX-512) vector; mmap keeps it since pages are 4 KiB
MAX_HEADER_NBYTES = 64 * 1024 * 1024  # far above any real header; bounds what a corrupt length makes us read

# On-disk dtypes, always little-endian.
DTYPES: dict[str, np.dtype] = {
    "float32": np.dtype("<f4"),
    "int32": np.dtype("<i4"),
    "uint16": np.dtype("<u2"),
    "int8": np.dtype("i1"),
    "float16": np.dtype("<f2"),
}

# The tables that may be stored as float16 (layout revision 3): they hold most of a pruned small model's bytes
# (all-MiniLM-L6-v2 pruned to 90%: 89% of its fp32 file, 94% of its int8 one), and float16 moves each value by at
# most 2^-11 of it, a relative error the embedding LayerNorm passes on scaled by the token's spread. The LayerNorm
# weights stay float32: they are few, and scale every token.
HALF_TABLES = ("embeddings.word_embeddings", "embeddings.position_embeddings", "embeddings.token_type_embeddings")

HEADER_KEYS: dict[str, type] = {
    "config": dict,
    "tensors": dict,
    "linears": dict,
    "data_nbytes": int,
    "producer": dict,
}
TENSOR_KEYS = ("dtype", "shape", "offset", "nbytes", "crc32")
LINEAR_KEYS = ("layout", "shape", "nnz", "sparsity", "block_fill", "bytes")

# Problems listed in one message before the rest are only counted.
MAX_LISTED = 20


def align_up(n: int, alignment: int = ALIGNMENT) -> int:
    return -(-n // alignment) * alignment


def header_offset(format_version: int = FORMAT_VERSION) -> int:
    """Where the JSON header starts in a file of this format version."""
    return PREAMBLE.size + (HEADER_CHECK.size if format_version >= FIRST_CHECKED_VERSION else 0)


def data_start(header_nbytes: int, format_version: int = FORMAT_VERSION) -> int:
    return align_up(header_offset(format_version) + header_nbytes)


def header_crc32(preamble: bytes, header: bytes) -> int:
    """The checksum stored at offset 24: it covers the preamble (so a flipped version or length is caught
    too) and the header JSON."""
    return zlib.crc32(header, zlib.crc32(preamble[: PREAMBLE.size])) & 0xFFFFFFFF


def dtype_name(dtype: np.dtype) -> str | None:
    """The on-disk name of a numpy dtype, ignoring byte order; None if not storable."""
    dtype = np.dtype(dtype)
    for name, disk in DTYPES.items():
        if dtype.kind == disk.kind and dtype.itemsize == disk.itemsize:
            return name
    return None


def array_dtypes(name: str) -> tuple[str, ...]:
    """The dtypes a plain array (an entry of ``encoder_spec``'s ``arrays``) may be stored as."""
    return ("float32", "float16") if name in HALF_TABLES else ("float32",)


def layout_revision(tensors: Mapping[str, Mapping[str, Any]]) -> int:
    """The layout revision of a file holding these header tensor entries: the first one that knows their dtypes."""
    return FLOAT16_REVISION if any(e["dtype"] == "float16" for e in tensors.values()) else PLAIN_REVISION


def is_int(value: Any) -> bool:
    # JSON true/false arrive as bool, which Python counts as int.
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return (is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _listing(problems: list[str]) -> str:
    shown = "; ".join(problems[:MAX_LISTED])
    more = len(problems) - MAX_LISTED
    return shown + (f"; ... and {more} more" if more > 0 else "")


def encoder_spec(config: Mapping[str, Any]) -> dict[str, Any]:
    """What an encoder with this config is made of, as the C++ engine defines it (csrc/encoder/encoder_spec.h, the
    one owner of the config schema, the weight names and the outputs): ``arrays`` {name: shape}, ``linears``
    {name: (rows, cols)}, ``outputs`` [name], ``max_sequence_length``. ModelFormatError for a bad config."""
    if not isinstance(config, dict):
        raise ModelFormatError(f"config must be a JSON object, got {type(config).__name__}")
    try:
        return core().encoder_spec(config)
    except ValueError as exc:
        raise ModelFormatError(str(exc)) from None


def validate_config(config: Any) -> None:
    """Check the encoder config (ARCHITECTURE.md, "Encoder config keys"): the engine's keys by the engine's own
    rules (encoder_spec), the keys only Python reads (pipelines, labels) here."""
    encoder_spec(config)
    problems = []
    if config.get("sentence_pooling", "mean") not in ("mean", "cls"):
        problems.append(f"sentence_pooling {config['sentence_pooling']!r} is not 'mean' or 'cls'")
    if not isinstance(config.get("sentence_normalize", False), bool):
        problems.append(f"sentence_normalize must be true or false, got {config['sentence_normalize']!r}")
    if "sentence_max_length" in config and not (is_int(config["sentence_max_length"])
                                                and config["sentence_max_length"] >= 1):
        problems.append(f"sentence_max_length must be a positive integer, got {config['sentence_max_length']!r}")
    if "id2label" in config:
        labels = config["id2label"]
        if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
            problems.append("id2label must map label ids to strings")
    if problems:
        raise ModelFormatError("bad config: " + _listing(problems))


def max_sequence_length(config: Mapping[str, Any]) -> int:
    """The longest input sequence whose position ids fit the position table (RoBERTa numbers non-padding tokens
    from pad_token_id + 1, so it gives up pad_token_id + 1 positions: roberta-base takes 512 of 514)."""
    return encoder_spec(config)["max_sequence_length"]


def expected_tensors(config: Mapping[str, Any]) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, int]]]:
    """Shapes of the plain arrays and of the packed linears an encoder with this config needs."""
    spec = encoder_spec(config)
    return dict(spec["arrays"]), dict(spec["linears"])


def _check_tensor_entry(name: str, entry: Any, data_nbytes: int) -> str | None:
    if not isinstance(entry, dict):
        return f"tensor {name!r}: entry must be a JSON object"
    missing = [k for k in TENSOR_KEYS if k not in entry]
    if missing:
        return f"tensor {name!r}: missing {', '.join(missing)}"
    dtype, shape, offset, nbytes, crc = (entry[k] for k in TENSOR_KEYS)
    if dtype not in DTYPES:
        return f"tensor {name!r}: unknown dtype {dtype!r} (known: {', '.join(DTYPES)})"
    if not isinstance(shape, list) or not all(is_int(d) and d >= 0 for d in shape):
        return f"tensor {name!r}: shape must be a list of non-negative integers, got {shape!r}"
    for key, value in (("offset", offset), ("nbytes", nbytes)):
        if not is_int(value) or value < 0:
            return f"tensor {name!r}: {key} must be a non-negative integer, got {value!r}"
    if not is_int(crc) or not 0 <= crc < 2**32:
        return f"tensor {name!r}: crc32 must be an unsigned 32-bit integer, got {crc!r}"
    expected = math.prod(shape) * DTYPES[dtype].itemsize
    if nbytes != expected:
        return f"tensor {name!r}: nbytes is {nbytes} but shape {shape} of {dtype} needs {expected}"
    if offset % ALIGNMENT:
        return f"tensor {name!r}: offset {offset} is not a multiple of {ALIGNMENT}"
    if offset + nbytes > data_nbytes:
        return f"tensor {name!r}: bytes {offset}..{offset + nbytes} run past data_nbytes {data_nbytes}"
    return None


def _check_overlaps(tensors: Mapping[str, dict]) -> None:
    spans = sorted((e["offset"], e["offset"] + e["nbytes"], n) for n, e in tensors.items() if e["nbytes"])
    for (_, end, prev), (start, _, name) in zip(spans, spans[1:]):
        if start < end:
            raise ModelFormatError(f"tensors {prev!r} and {name!r} overlap")


def _check_linear(name: str, meta: Any, tensors: Mapping[str, dict]) -> list[str]:
    if not isinstance(meta, dict):
        return [f"linear {name!r}: entry must be a JSON object"]
    missing = [k for k in LINEAR_KEYS if k not in meta]
    if missing:
        return [f"linear {name!r}: missing {', '.join(missing)}"]
    layout, shape = meta["layout"], meta["shape"]
    if layout not in layouts.LAYOUTS:
        return [f"linear {name!r}: unknown layout {layout!r} (known: {', '.join(layouts.LAYOUTS)})"]
    if not (isinstance(shape, list) and len(shape) == 2 and all(is_int(d) and d > 0 for d in shape)):
        return [f"linear {name!r}: shape must be two positive integers, got {shape!r}"]
    n_rows, n_cols = shape
    problems = []
    if not is_int(meta["nnz"]) or not 0 <= meta["nnz"] <= n_rows * n_cols:
        problems.append(f"linear {name!r}: nnz {meta['nnz']!r} is not an integer in [0, {n_rows * n_cols}]")
    for key in ("sparsity", "block_fill"):
        if not is_number(meta[key]) or not 0 <= meta[key] <= 1:
            problems.append(f"linear {name!r}: {key} {meta[key]!r} is not a number in [0, 1]")
    if not is_int(meta["bytes"]) or meta["bytes"] < 0:
        problems.append(f"linear {name!r}: bytes {meta['bytes']!r} is not a non-negative integer")
    if "weight_error" in meta and not (is_number(meta["weight_error"]) and meta["weight_error"] >= 0):
        problems.append(f"linear {name!r}: weight_error {meta['weight_error']!r} is not a number >= 0")

    entries = {s: tensors.get(f"{name}.{s}") for s in layouts.array_suffixes(layout)}
    absent = [f"{name}.{s}" for s, e in entries.items() if e is None]
    if absent:
        return problems + [f"linear {name!r} ({layout}) lacks tensor(s) {', '.join(absent)}"]
    count_name = layouts.stored_count_array(layout)
    stored = entries[count_name]["shape"][0] if count_name and entries[count_name]["shape"] else 0
    if stored > layouts.MAX_STORED:
        problems.append(f"linear {name!r}: {stored} stored entries overflow int32 pointers")
    wanted_dtypes = {**layouts.LAYOUT_ARRAYS[layout], layouts.BIAS: "float32"}
    for suffix, shp in layouts.expected_array_shapes(layout, n_rows, n_cols, stored).items():
        entry = entries[suffix]
        if entry["dtype"] != wanted_dtypes[suffix] or tuple(entry["shape"]) != shp:
            problems.append(
                f"tensor '{name}.{suffix}' is {entry['dtype']}{entry['shape']}, "
                f"expected {wanted_dtypes[suffix]}{list(shp)}"
            )
    total = sum(e["nbytes"] for e in entries.values())
    if is_int(meta["bytes"]) and meta["bytes"] != total:
        problems.append(f"linear {name!r}: bytes is {meta['bytes']} but its tensors hold {total}")
    return problems


def _check_model(header: Mapping[str, Any]) -> list[str]:
    arrays, linears = expected_tensors(header["config"])
    tensors, metas = header["tensors"], header["linears"]
    problems = []
    absent = [n for n in arrays if n not in tensors] + [f"{n} (linear)" for n in linears if n not in metas]
    if absent:
        problems.append("missing " + ", ".join(absent))
    for name, shape in arrays.items():
        entry = tensors.get(name)
        allowed = array_dtypes(name)
        if entry is not None and (entry["dtype"] not in allowed or tuple(entry["shape"]) != shape):
            problems.append(f"tensor {name!r} is {entry['dtype']}{entry['shape']}, expected "
                            f"{' or '.join(allowed)}{list(shape)}")
    for name, shape in linears.items():
        meta = metas.get(name)
        if meta is not None and tuple(meta["shape"]) != shape:
            problems.append(f"linear {name!r} has shape {meta['shape']}, expected {list(shape)}")
    # Leftovers mean the config and the stored tensors disagree (e.g. num_hidden_layers too small):
    # refuse rather than guess which one is right.
    extra_linears = [n for n in metas if n not in linears]
    if extra_linears:
        problems.append("unexpected linear(s) " + ", ".join(extra_linears))
    owned = set(arrays)
    for name, meta in metas.items():
        if isinstance(meta, dict) and meta.get("layout") in layouts.LAYOUTS:
            owned.update(f"{name}.{s}" for s in layouts.array_suffixes(meta["layout"]))
    extra_tensors = [n for n in tensors if n not in owned]
    if extra_tensors:
        problems.append("unexpected tensor(s) " + ", ".join(extra_tensors))
    return problems


def validate_header(header: Any) -> None:
    """Check everything that can be checked without the tensor bytes; raise ModelFormatError."""
    if not isinstance(header, dict):
        raise ModelFormatError(f"header must be a JSON object, got {type(header).__name__}")
    missing = [k for k in HEADER_KEYS if k not in header]
    if missing:
        raise ModelFormatError(f"header is missing {', '.join(missing)}")
    for key, kind in HEADER_KEYS.items():
        ok = is_int(header[key]) and header[key] >= 0 if kind is int else isinstance(header[key], kind)
        if not ok:
            raise ModelFormatError(f"header field {key!r} has the wrong type ({type(header[key]).__name__})")
    # Optional: the tokenizer's tokenizer.json text, for sparsebert.pipeline.
    if "tokenizer" in header and not isinstance(header["tokenizer"], str):
        raise ModelFormatError(f"header field 'tokenizer' must be a string, got {type(header['tokenizer']).__name__}")
    tensors = header["tensors"]
    problems = [p for n, e in tensors.items() if (p := _check_tensor_entry(n, e, header["data_nbytes"]))]
    if problems:
        raise ModelFormatError(_listing(problems))
    _check_overlaps(tensors)
    validate_config(header["config"])
    problems = [p for n, m in header["linears"].items() for p in _check_linear(n, m, tensors)]
    if problems:
        raise ModelFormatError(_listing(problems))
    problems = _check_model(header)
    if problems:
        raise ModelFormatError("not a complete encoder: " + _listing(problems))
