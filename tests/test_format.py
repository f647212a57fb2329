"""The .sbert file: round trip, every kind of corruption, and atomic export."""

from __future__ import annotations

import json
import os
import re
import struct
import zlib

import numpy as np
import pytest

import sparsebert
from sparsebert import ModelFormatError, SparseEngine, UnsupportedModelError
from sparsebert.format import spec
from sparsebert.format.reader import read_model

from conftest import make_model, random_inputs, save_checkpoint, torch_forward, assert_close_unpadded

MAGIC = b"SPBERT\x00\x1a"


# ------------------------------------------------------------------------------------------------------------
# Byte-level helpers written from the spec, independent of sparsebert.format
# ------------------------------------------------------------------------------------------------------------


def header_offset(fv: int) -> int:
    # Version 1: the header follows the 24-byte preamble; version 2 puts header_crc32 and a reserved word first.
    return 24 if fv == 1 else 32


def parse(data: bytes):
    assert data[:8] == MAGIC
    fv, lr, hn = struct.unpack_from("<IIQ", data, 8)
    ho = header_offset(fv)
    header = json.loads(data[ho : ho + hn].decode("utf-8"))
    data_start = -(-(ho + hn) // 64) * 64
    return fv, lr, hn, header, data_start


def build(fv: int, lr: int, header, payload: bytes, pad_byte=b"\0", crc=None, reserved=0) -> bytes:
    """A file from its parts; for version 2 the header CRC is computed unless `crc` is given."""
    hb = json.dumps(header).encode("utf-8") if not isinstance(header, bytes) else header
    preamble = MAGIC + struct.pack("<IIQ", fv, lr, len(hb))
    if fv != 1:
        crc = zlib.crc32(preamble + hb) & 0xFFFFFFFF if crc is None else crc
        preamble += struct.pack("<II", crc, reserved)
    pad = -(len(preamble) + len(hb)) % 64
    return preamble + hb + pad_byte * pad + payload


def split(data: bytes):
    fv, lr, hn, header, data_start = parse(data)
    return fv, lr, header, data[data_start:]


def assert_rejected(tmp_path, data: bytes, match=None, name="bad.sbert"):
    """Both the reader and the engine refuse the bytes with a ModelFormatError (a ValueError).

    Returns the message with the file's path removed (so callers can look for numbers in it)."""
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(ModelFormatError, match=match) as info:
        read_model(path)
    assert isinstance(info.value, ValueError)
    with pytest.raises(ModelFormatError, match=match):
        SparseEngine.load(path)
    return str(info.value).replace(str(path), "<path>")


@pytest.fixture(scope="module")
def good(small_model):
    return small_model.path.read_bytes()


def test_error_classes():
    assert issubclass(ModelFormatError, ValueError)
    assert issubclass(UnsupportedModelError, ValueError)


# ------------------------------------------------------------------------------------------------------------
# The file as written
# ------------------------------------------------------------------------------------------------------------


def test_file_matches_the_spec(good):
    fv, lr, hn, header, data_start = parse(good)
    assert fv == 2
    assert lr >= 1
    (crc, reserved) = struct.unpack_from("<II", good, 24)
    assert crc == zlib.crc32(good[:24] + good[32 : 32 + hn]) & 0xFFFFFFFF and reserved == 0
    assert set(header) >= {"config", "tensors", "linears", "data_nbytes", "producer"}
    assert data_start + header["data_nbytes"] == len(good)
    assert good[32 + hn : data_start] == b"\0" * (data_start - 32 - hn)
    spans = []
    for name, t in header["tensors"].items():
        assert t["offset"] % 64 == 0, name
        itemsize = {"float32": 4, "int32": 4, "uint16": 2}[t["dtype"]]
        assert t["nbytes"] == int(np.prod(t["shape"], dtype=np.int64)) * itemsize, name
        blob = good[data_start + t["offset"] : data_start + t["offset"] + t["nbytes"]]
        assert zlib.crc32(blob) & 0xFFFFFFFF == t["crc32"], name
        spans.append((t["offset"], t["offset"] + t["nbytes"]))
    spans.sort()
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), "tensors overlap"
    config = header["config"]
    assert config["model_type"] == "bert" and config["head"] == "sequence_classification"
    assert config["has_pooler"] is True and config["num_labels"] == 3
    assert set(header["linears"]["layers.0.ffn.up"]) >= {"layout", "shape", "nnz", "sparsity", "block_fill", "bytes"}


def test_round_trip(small_model):
    """Every stored array decodes back to exactly the torch weights it came from."""
    from test_packing import unpack

    packed = read_model(small_model.path)
    model = small_model.model
    assert packed.format_version == 2
    cfg = packed.config
    mc = model.config
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size",
                "max_position_embeddings", "type_vocab_size", "hidden_act", "num_labels"):
        assert cfg[key] == getattr(mc, key), key
    assert cfg["layer_norm_eps"] == mc.layer_norm_eps

    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}

    def linear(name):
        meta = packed.linears[name]
        arrays = packed.linear_arrays(name)
        return unpack(arrays, meta["layout"], meta["shape"]), arrays["bias"], meta["layout"]

    layouts = set()
    for i in range(mc.num_hidden_layers):
        p = f"bert.encoder.layer.{i}."
        w, b, layout = linear(f"layers.{i}.attention.qkv")
        layouts.add(layout)
        np.testing.assert_array_equal(
            w, np.concatenate([sd[p + f"attention.self.{m}.weight"] for m in ("query", "key", "value")])
        )
        np.testing.assert_array_equal(
            b, np.concatenate([sd[p + f"attention.self.{m}.bias"] for m in ("query", "key", "value")])
        )
        for ours, theirs in [
            ("attention.output", "attention.output.dense"),
            ("ffn.up", "intermediate.dense"),
            ("ffn.down", "output.dense"),
        ]:
            w, b, _ = linear(f"layers.{i}.{ours}")
            np.testing.assert_array_equal(w, sd[p + theirs + ".weight"])
            np.testing.assert_array_equal(b, sd[p + theirs + ".bias"])
        for ours, theirs in [("attention.layer_norm", "attention.output.LayerNorm"),
                             ("ffn.layer_norm", "output.LayerNorm")]:
            for s in ("weight", "bias"):
                np.testing.assert_array_equal(packed.tensors[f"layers.{i}.{ours}.{s}"], sd[p + theirs + "." + s])
    assert layouts == {"dense", "unstructured", "block4"}
    for ours, theirs in [
        ("embeddings.word_embeddings", "bert.embeddings.word_embeddings.weight"),
        ("embeddings.position_embeddings", "bert.embeddings.position_embeddings.weight"),
        ("embeddings.token_type_embeddings", "bert.embeddings.token_type_embeddings.weight"),
        ("embeddings.layer_norm.weight", "bert.embeddings.LayerNorm.weight"),
        ("embeddings.layer_norm.bias", "bert.embeddings.LayerNorm.bias"),
    ]:
        np.testing.assert_array_equal(packed.tensors[ours], sd[theirs])
    for ours, theirs in [("pooler", "bert.pooler.dense"), ("classifier", "classifier")]:
        w, b, _ = linear(ours)
        np.testing.assert_array_equal(w, sd[theirs + ".weight"])
        np.testing.assert_array_equal(b, sd[theirs + ".bias"])


def test_rebuilt_file_is_accepted(tmp_path, good):
    # Sanity for the corruption tests below: re-serialising the header with this file's own helper yields a
    # file the reader accepts, so their failures come from the one thing each of them changes.
    fv, lr, header, payload = split(good)
    path = tmp_path / "rebuilt.sbert"
    path.write_bytes(build(fv, lr, header, payload))
    read_model(path)
    SparseEngine.load(path)


# ------------------------------------------------------------------------------------------------------------
# Corruption
# ------------------------------------------------------------------------------------------------------------


def test_loader_never_unpickles(tmp_path, small_model, monkeypatch):
    # A model file is data: loading and running one must work with every unpickling entry point disabled, and a
    # pickle handed to the loader is refused as a foreign file, never executed.
    import pickle

    def forbidden(*args, **kwargs):
        raise AssertionError("the loader unpickled something")

    class Exploit:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    evil = tmp_path / "evil.sbert"
    evil.write_bytes(pickle.dumps(Exploit()))
    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, forbidden)
    monkeypatch.setattr(np, "load", forbidden)
    SparseEngine.load(small_model.path).run({"input_ids": np.array([[3, 5, 7]])})
    with pytest.raises(ModelFormatError, match="not a .sbert file"):
        SparseEngine.load(evil)
    assert not (tmp_path / "pwned").exists()


def test_truncated(tmp_path, good):
    _, _, hn, header, data_start = parse(good)
    first = min(t["offset"] for t in header["tensors"].values())
    cuts = sorted(
        {0, 1, 7, 8, 12, 16, 23, 24, 28, 31, 32, 32 + hn // 2, 32 + hn - 1, 32 + hn, data_start, data_start + first + 1,
         data_start + header["data_nbytes"] // 2, len(good) - 64, len(good) - 1}
    )
    for cut in cuts:
        assert 0 <= cut < len(good)
        assert_rejected(tmp_path, good[:cut], name=f"cut{cut}.sbert")


def test_empty_file(tmp_path):
    assert_rejected(tmp_path, b"")


def test_wrong_magic(tmp_path, good):
    for magic in (b"SPBERT\x00\x1b", b"spbert\x00\x1a", b"\x00" * 8, b"PK\x03\x04\x00\x00\x00\x00"):
        msg = assert_rejected(tmp_path, magic + good[8:])
        assert "magic" in msg.lower() or "not a" in msg.lower(), msg
    # A text-mode transfer that turned \x1a / \x00 into something else breaks it too.
    assert_rejected(tmp_path, b"SPBERT\r\n" + good[8:])


def test_text_file(tmp_path):
    assert_rejected(tmp_path, b"this is definitely not a packed model file, just some text\n" * 3)


@pytest.mark.parametrize("field, offset", [("format_version", 8), ("layout_revision", 12)])
def test_newer_version(tmp_path, good, field, offset):
    # The newest this reader knows (a file without float16 is written with an older layout revision than that).
    known = {"format_version": spec.FORMAT_VERSION, "layout_revision": spec.LAYOUT_REVISION}[field]
    newer = known + 41
    data = bytearray(good)
    struct.pack_into("<I", data, offset, newer)
    msg = assert_rejected(tmp_path, bytes(data), match=field)
    # The message names both versions: the file's and the one this reader knows.
    assert re.search(rf"\b{newer}\b", msg) and re.search(rf"\b{known}\b", msg), msg


@pytest.mark.parametrize("offset", [8, 12])
def test_zero_version(tmp_path, good, offset):
    data = bytearray(good)
    struct.pack_into("<I", data, offset, 0)
    assert_rejected(tmp_path, bytes(data))


@pytest.mark.parametrize("delta", ["len", "len+1", "2**63", "2**64-1", "-1"])
def test_header_length_beyond_file(tmp_path, good, delta):
    _, _, hn, _, _ = parse(good)
    value = {
        "len": len(good) - 32 + 1,
        "len+1": len(good),
        "2**63": 2**63,
        "2**64-1": 2**64 - 1,
        "-1": hn - 1,  # shorter than the JSON: the header no longer parses
    }[delta]
    data = bytearray(good)
    struct.pack_into("<Q", data, 16, value)
    assert_rejected(tmp_path, bytes(data))


def test_corrupted_json(tmp_path, good):
    # The CRC is recomputed over each corrupted header, so the JSON parser is what must refuse it.
    fv, lr, header, payload = split(good)
    text = json.dumps(header).encode("utf-8")
    mid = len(text) // 2
    for patch in (b"\xff\xfe", b'"', b"}", b"\x00"):
        at = mid if text[mid : mid + len(patch)] != patch else mid + 1  # the patch must change a byte
        bad = text[:at] + patch + text[at + len(patch) :]
        msg = assert_rejected(tmp_path, build(fv, lr, bad, payload))
        assert "crc" not in msg.lower(), msg
    assert_rejected(tmp_path, build(fv, lr, b"[" + text[1:], payload))


def test_header_crc_catches_a_flipped_digit(tmp_path, good):
    # A digit changed inside the JSON still parses as a valid (different) model: only the CRC can tell.
    fv, lr, hn, header, _ = parse(good)
    text = good[32 : 32 + hn]
    at = text.index(b'"layer_norm_eps":') + len(b'"layer_norm_eps":')
    digit = next(i for i in range(at, len(text)) if text[i : i + 1].isdigit() and text[i : i + 1] != b"0")
    data = bytearray(good)
    data[32 + digit] = ord("7") if text[digit : digit + 1] != b"7" else ord("3")
    json.loads(bytes(data[32 : 32 + hn]))  # still valid JSON
    assert_rejected(tmp_path, bytes(data), match="header fails its CRC")


@pytest.mark.parametrize("offset", [8, 12, 16, 24, 27])
def test_header_crc_covers_the_preamble(tmp_path, good, offset):
    # Versions and length are covered as well as the CRC word itself; each low-bit flip is refused.
    data = bytearray(good)
    data[offset] ^= 0x01
    assert_rejected(tmp_path, bytes(data))


def test_reserved_preamble_word_must_be_zero(tmp_path, good):
    fv, lr, header, payload = split(good)
    assert_rejected(tmp_path, build(fv, lr, header, payload, reserved=1), match="reserved")


def test_version_1_file_still_loads(tmp_path, good, small_model):
    # Files written before the header checksum (format version 1: header at offset 24) load and run the same.
    fv, lr, header, payload = split(good)
    path = tmp_path / "v1.sbert"
    path.write_bytes(build(1, lr, header, payload))
    assert read_model(path).format_version == 1
    inputs = {"input_ids": np.array([[5, 9, 11, 2]], np.int64)}
    expected = SparseEngine.load(small_model.path).run(inputs)
    out = SparseEngine.load(path).run(inputs)
    for key in expected:
        np.testing.assert_array_equal(out[key], expected[key])


def _rebuilt(good, mutate):
    fv, lr, header, payload = split(good)
    header = json.loads(json.dumps(header))
    result = mutate(header)
    if result is not None:
        header = result
    return build(fv, lr, header, payload)


def _first(header, layout_part):
    return next(n for n in header["tensors"] if n.endswith(layout_part))


def _set_tensor(name_part, **changes):
    def mutate(h):
        h["tensors"][_first(h, name_part)].update(changes)

    return mutate


HEADER_MUTATIONS = {
    "root not an object": lambda h: [h],
    "missing tensors": lambda h: h.pop("tensors") and None,
    "missing config": lambda h: h.pop("config") and None,
    "missing linears": lambda h: h.pop("linears") and None,
    "data_nbytes too small": lambda h: h.update(data_nbytes=h["data_nbytes"] - 64),
    "data_nbytes too large": lambda h: h.update(data_nbytes=h["data_nbytes"] + 64),
    "unknown dtype": _set_tensor("word_embeddings", dtype="float64"),
    "misaligned offset": lambda h: h["tensors"][_first(h, "ffn.up.bias")].update(
        offset=h["tensors"][_first(h, "ffn.up.bias")]["offset"] + 4
    ),
    "overlapping tensors": lambda h: h["tensors"][_first(h, "layers.1.ffn.up.bias")].update(
        offset=h["tensors"][_first(h, "layers.1.ffn.up.values")]["offset"]
    ),
    "offset past data": _set_tensor("embeddings.layer_norm.bias", offset=2**40),
    "nbytes disagrees with shape": lambda h: h["tensors"][_first(h, "embeddings.layer_norm.bias")].update(
        shape=[h["tensors"][_first(h, "embeddings.layer_norm.bias")]["shape"][0] - 1]
    ),
    "negative shape": _set_tensor("embeddings.layer_norm.bias", shape=[-40]),
    "bad crc field": _set_tensor("embeddings.layer_norm.bias", crc32="abc"),
    "missing required tensor": lambda h: h["tensors"].pop(_first(h, "layers.0.attention.layer_norm.weight")) and None,
    "missing linear array": lambda h: h["tensors"].pop(_first(h, "layers.1.ffn.up.col_idx")) and None,
    "unknown layout": lambda h: h["linears"]["layers.1.ffn.up"].update(layout="csc"),
    "layout disagrees with arrays": lambda h: h["linears"]["layers.1.ffn.up"].update(layout="block4"),
    "linear shape wrong": lambda h: h["linears"]["layers.0.ffn.down"].update(shape=[40, 73]),
    "config hidden_size disagrees": lambda h: h["config"].update(hidden_size=48),
    "config missing key": lambda h: h["config"].pop("num_attention_heads") and None,
    "config unknown activation": lambda h: h["config"].update(hidden_act="swish"),
    "config unknown head": lambda h: h["config"].update(head="masked_lm"),
    "config unknown model_type": lambda h: h["config"].update(model_type="albert"),
    "config unknown position_ids": lambda h: h["config"].update(position_ids="relative_key"),
    "config padding_offset without pad id": lambda h: h["config"].update(position_ids="padding_offset"),
    "config unknown pooler_act": lambda h: h["config"].update(pooler_act="gelu"),
    "config pooler_is_head not bool": lambda h: h["config"].update(pooler_is_head=1),
    "config heads do not divide hidden": lambda h: h["config"].update(num_attention_heads=3),
    "config fewer layers than stored": lambda h: h["config"].update(num_hidden_layers=2),
    "config more layers than stored": lambda h: h["config"].update(num_hidden_layers=4),
    "config vocab disagrees": lambda h: h["config"].update(vocab_size=98),
    "config boolean as int": lambda h: h["config"].update(hidden_size=True),
}


@pytest.mark.parametrize("case", list(HEADER_MUTATIONS))
def test_inconsistent_header(tmp_path, good, case):
    assert_rejected(tmp_path, _rebuilt(good, HEADER_MUTATIONS[case]))


def test_non_zero_header_padding(tmp_path, good):
    fv, lr, header, payload = split(good)
    hb = json.dumps(header).encode()
    if (32 + len(hb)) % 64 == 0:
        hb += b" "
    assert_rejected(tmp_path, build(fv, lr, hb, payload, pad_byte=b"x"))


def test_non_zero_padding_between_tensors(tmp_path, good):
    _, _, _, header, data_start = parse(good)
    spans = sorted((t["offset"], t["offset"] + t["nbytes"]) for t in header["tensors"].values())
    gap = next(end for (_, end), (nxt, _) in zip(spans, spans[1:]) if nxt > end)
    data = bytearray(good)
    data[data_start + gap] = 1
    assert_rejected(tmp_path, bytes(data), match="padding")


@pytest.mark.parametrize("which", ["first", "middle", "last"])
def test_flipped_data_byte(tmp_path, good, which):
    _, _, _, header, data_start = parse(good)
    items = sorted(header["tensors"].items(), key=lambda kv: kv[1]["offset"])
    items = [kv for kv in items if kv[1]["nbytes"] > 0]
    name, t = {"first": items[0], "middle": items[len(items) // 2], "last": items[-1]}[which]
    for pos in (0, t["nbytes"] // 2, t["nbytes"] - 1):
        data = bytearray(good)
        data[data_start + t["offset"] + pos] ^= 0x10
        msg = assert_rejected(tmp_path, bytes(data), match="(?i)crc|checksum")
        assert name in msg, msg


def test_trailing_garbage(tmp_path, good):
    for extra in (b"\0", b"x", b"\0" * 64, good[-100:]):
        assert_rejected(tmp_path, good + extra)


def _patched_linear(good, linear, mutate):
    """Rewrites the arrays of one packed linear (same shapes and dtypes) and recomputes their CRCs, so only the
    semantic index checks can catch the change."""
    fv, lr, header, payload = split(good)
    payload = bytearray(payload)
    dtypes = {"float32": "<f4", "int32": "<i4", "uint16": "<u2"}
    arrays = {}
    for name, t in header["tensors"].items():
        if name.startswith(linear + "."):
            raw = bytes(payload[t["offset"] : t["offset"] + t["nbytes"]])
            arrays[name[len(linear) + 1 :]] = np.frombuffer(raw, dtype=dtypes[t["dtype"]]).reshape(t["shape"]).copy()
    assert arrays, linear
    mutate(arrays)
    for suffix, arr in arrays.items():
        t = header["tensors"][f"{linear}.{suffix}"]
        blob = np.ascontiguousarray(arr).tobytes()
        assert len(blob) == t["nbytes"]
        payload[t["offset"] : t["offset"] + t["nbytes"]] = blob
        t["crc32"] = zlib.crc32(blob) & 0xFFFFFFFF
    return build(fv, lr, header, bytes(payload))


def _row_with(arrays, ptr_name, at_least):
    ptr = arrays[ptr_name]
    return next(i for i in range(len(ptr) - 1) if ptr[i + 1] - ptr[i] >= at_least)


def _dup_in_row(ptr_name, idx_name):
    def f(a):
        i = _row_with(a, ptr_name, 2)
        a[idx_name][a[ptr_name][i] + 1] = a[idx_name][a[ptr_name][i]]

    return f


def _swap_in_row(ptr_name, idx_name):
    def f(a):
        i = _row_with(a, ptr_name, 2)
        j = a[ptr_name][i]
        a[idx_name][j], a[idx_name][j + 1] = a[idx_name][j + 1], a[idx_name][j]

    return f


def _block_past_k(a):
    # layers.0.ffn.down is [40, 74]: block 18 covers inputs 72..75, its lanes 2 and 3 lie past K.
    rows = np.flatnonzero(a["block_col"] == 18)
    assert rows.size, "test model stores no partial block"
    a["block_values"][rows[0], 3] = 1.0


INDEX_CORRUPTIONS = {
    # layers.1 is unstructured, layers.0 block4 (the "mixed" plan); ffn.up is [74, 40].
    "col_idx out of range": ("layers.1.ffn.up", lambda a: a["col_idx"].__setitem__(0, 40)),
    "col_idx max uint16": ("layers.1.ffn.up", lambda a: a["col_idx"].__setitem__(-1, 65535)),
    "col_idx repeated in a row": ("layers.1.ffn.up", _dup_in_row("row_ptr", "col_idx")),
    "col_idx decreasing in a row": ("layers.1.ffn.up", _swap_in_row("row_ptr", "col_idx")),
    "row_ptr not monotone": ("layers.1.ffn.up", lambda a: a["row_ptr"].__setitem__(5, 10**6)),
    "row_ptr negative": ("layers.1.ffn.up", lambda a: a["row_ptr"].__setitem__(3, -7)),
    "row_ptr first not 0": ("layers.1.ffn.up", lambda a: a["row_ptr"].__setitem__(0, 1)),
    "row_ptr end wrong": ("layers.1.ffn.up", lambda a: a["row_ptr"].__setitem__(-1, a["row_ptr"][-1] - 1)),
    "block_col out of range": ("layers.0.ffn.up", lambda a: a["block_col"].__setitem__(0, 10)),
    "block_col repeated in a row": ("layers.0.ffn.up", _dup_in_row("block_ptr", "block_col")),
    "block_col decreasing in a row": ("layers.0.ffn.up", _swap_in_row("block_ptr", "block_col")),
    "block_ptr not monotone": ("layers.0.ffn.up", lambda a: a["block_ptr"].__setitem__(2, 10**5)),
    "block nonzero past K": ("layers.0.ffn.down", _block_past_k),
}


@pytest.mark.parametrize("case", list(INDEX_CORRUPTIONS))
def test_corrupt_indices_with_valid_crc(tmp_path, good, case):
    # Garbage indices behind a correct CRC must be refused as a format error and never reach a kernel.
    linear, mutate = INDEX_CORRUPTIONS[case]
    assert_rejected(tmp_path, _patched_linear(good, linear, mutate))


def test_patched_linear_helper_is_neutral(tmp_path, good):
    # Rewriting the arrays unchanged yields a valid file (so the failures above are caused by the changes).
    for linear in ("layers.0.ffn.up", "layers.1.ffn.up", "layers.0.ffn.down"):
        path = tmp_path / "same.sbert"
        path.write_bytes(_patched_linear(good, linear, lambda a: None))
        read_model(path)


# ------------------------------------------------------------------------------------------------------------
# Export: atomic writes and unsupported models
# ------------------------------------------------------------------------------------------------------------

SENTINEL = b"previous contents of the destination file\n" * 10


def _prepare_destination(tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    dest = out_dir / "model.sbert"
    dest.write_bytes(SENTINEL)
    return out_dir, dest


def _assert_untouched(out_dir, dest):
    assert dest.read_bytes() == SENTINEL, "failed export modified the existing destination"
    leftovers = sorted(p.name for p in out_dir.iterdir())
    assert leftovers == ["model.sbert"], f"failed export left files behind: {leftovers}"


def test_failed_export_unsupported_config(tmp_path):
    out_dir, dest = _prepare_destination(tmp_path)
    model = make_model("base", num_hidden_layers=1, hidden_act="silu")
    with pytest.raises(UnsupportedModelError, match="silu"):
        sparsebert.export(model, dest, verbose=False)
    _assert_untouched(out_dir, dest)


def test_failed_export_source_raises_midway(tmp_path):
    import torch

    out_dir, dest = _prepare_destination(tmp_path)
    model = make_model("base", num_hidden_layers=3)
    # The last layer's weight cannot be read (a meta tensor has no data): the exporter fails after having
    # processed the first layers.
    last = model.encoder.layer[2].output.dense
    last.weight = torch.nn.Parameter(torch.empty(last.weight.shape, device="meta"))
    with pytest.raises(Exception):
        sparsebert.export(model, dest, verbose=False)
    _assert_untouched(out_dir, dest)


def test_failed_export_truncated_checkpoint(tmp_path):
    model = make_model("base", num_hidden_layers=2)
    ckpt = save_checkpoint(model, tmp_path / "ckpt")
    weights = ckpt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    out_dir, dest = _prepare_destination(tmp_path)
    with pytest.raises(ValueError, match="model.safetensors"):
        sparsebert.export(ckpt, dest, verbose=False)
    _assert_untouched(out_dir, dest)


def test_failed_export_during_write(tmp_path, monkeypatch):
    # The failure happens after the temporary file has been (at least partly) written: every way of
    # finishing an atomic write (fsync, rename/replace) fails.
    out_dir, dest = _prepare_destination(tmp_path)
    model = make_model("base", num_hidden_layers=1)

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device (simulated)")

    monkeypatch.setattr(os, "fsync", boom)
    monkeypatch.setattr(os, "replace", boom)
    monkeypatch.setattr(os, "rename", boom)
    with pytest.raises(OSError, match="simulated"):
        sparsebert.export(model, dest, verbose=False)
    monkeypatch.undo()
    _assert_untouched(out_dir, dest)


def test_interrupted_export_leaves_destination_and_no_temp_file(tmp_path, monkeypatch):
    # Ctrl-C while the temporary file is being written: the KeyboardInterrupt propagates, the destination is
    # as it was and the partial temporary file is removed.
    out_dir, dest = _prepare_destination(tmp_path)
    model = make_model("base", num_hidden_layers=1)

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupt)
    with pytest.raises(KeyboardInterrupt):
        sparsebert.export(model, dest, verbose=False)
    monkeypatch.undo()
    _assert_untouched(out_dir, dest)


KILLED_EXPORT = """
import os, sys, time
sys.path.insert(0, {tests!r})
import sparsebert
from conftest import make_model

def stall(fd):  # the temporary file is complete but not yet renamed: say so, then wait for SIGKILL
    open({marker!r}, "w").close()
    time.sleep(600)

os.fsync = stall
sparsebert.export(make_model("base", num_hidden_layers=2), {dest!r}, verbose=False)
"""


@pytest.mark.slow
def test_killed_export_leaves_destination_untouched(tmp_path):
    # SIGKILL (or a power cut) cannot be cleaned up after: the destination must still hold its old contents, and
    # the only trace is a hidden ".model.sbert.<random>.tmp" next to it.
    import signal
    import subprocess
    import sys
    import time

    out_dir, dest = _prepare_destination(tmp_path)
    marker = tmp_path / "stalled"
    script = KILLED_EXPORT.format(tests=os.path.dirname(__file__), marker=str(marker), dest=str(dest))
    log = tmp_path / "stderr.txt"
    with open(log, "wb") as stderr:
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert proc.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, "the export never reached its final fsync"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert dest.read_bytes() == SENTINEL
    leftovers = sorted(p.name for p in out_dir.iterdir() if p.name != "model.sbert")
    assert len(leftovers) == 1 and re.fullmatch(r"\.model\.sbert\.[0-9a-f]{12}\.tmp", leftovers[0]), leftovers


def test_export_replaces_existing_file(tmp_path, small_model):
    out_dir, dest = _prepare_destination(tmp_path)
    sparsebert.export(small_model.model, dest, verbose=False, compact=False)
    assert sorted(p.name for p in out_dir.iterdir()) == ["model.sbert"]
    assert dest.read_bytes()[:8] == MAGIC
    # Deterministic: the same model exports to the same tensors and header (the producer entry aside).
    _, _, new_header, new_payload = split(dest.read_bytes())
    _, _, old_header, old_payload = split(small_model.path.read_bytes())
    new_header.pop("producer")
    old_header.pop("producer")
    assert new_header == old_header
    assert new_payload == old_payload
    read_model(dest)


def test_export_into_missing_directory(tmp_path, small_model):
    with pytest.raises(OSError):
        sparsebert.export(small_model.model, tmp_path / "nope" / "m.sbert", verbose=False)
    assert not (tmp_path / "nope").exists()


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(hidden_act="silu"), "silu"),
        (dict(position_embedding_type="relative_key"), "relative_key"),
        (dict(is_decoder=True), "decoder"),
    ],
)
def test_unsupported_configs(tmp_path, kwargs, fragment):
    model = make_model("base", num_hidden_layers=1, **kwargs)
    with pytest.raises(UnsupportedModelError, match=fragment):
        sparsebert.export(model, tmp_path / "m.sbert", verbose=False)
    # ... and from a checkpoint directory.
    ckpt = save_checkpoint(model, tmp_path / "ckpt")
    with pytest.raises(UnsupportedModelError, match=fragment):
        sparsebert.export(ckpt, tmp_path / "m.sbert", verbose=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_unsupported_model_type_dir(tmp_path):
    ckpt = tmp_path / "gpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 8, "n_layer": 1, "n_head": 2}))
    (ckpt / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    with pytest.raises(UnsupportedModelError, match="gpt2"):
        sparsebert.export(ckpt, tmp_path / "m.sbert", verbose=False)


def test_unsupported_object(tmp_path):
    import torch

    with pytest.raises((UnsupportedModelError, TypeError)):
        sparsebert.export(torch.nn.Linear(3, 4), tmp_path / "m.sbert", verbose=False)
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_dir_without_weights(tmp_path):
    model = make_model("base", num_hidden_layers=1)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    model.config.save_pretrained(str(ckpt))
    with pytest.raises((ValueError, OSError), match="(?i)safetensors|pytorch_model|weights"):
        sparsebert.export(ckpt, tmp_path / "m.sbert", verbose=False)
    assert not (tmp_path / "m.sbert").exists()


def test_exported_file_runs(small_model):
    # The round-tripped file is not just readable: it computes the same thing as the model it came from.
    inp = random_inputs(small_model.config.vocab_size, [10, 4], seed=6)
    ref = torch_forward(small_model.model, inp)
    out = SparseEngine.load(small_model.path).run(inp)
    assert_close_unpadded(out["last_hidden_state"], ref["last_hidden_state"], inp["attention_mask"])
