"""float16 embedding tables (``export(..., embeddings="fp16")``): what the file stores, that the engine runs exactly
the rounded tables, the embedding output within the bound float16's rounding allows, the size saved, the report,
``sparsebert info`` and the CLI flag, int8 and ONNX sources, and the reader's refusals (float16 elsewhere, a
revision the reader does not know, a float16 file claiming revision 2)."""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import sparsebert  # noqa: E402
from sparsebert import ModelFormatError, SparseEngine  # noqa: E402
from sparsebert.cli import main as cli_main  # noqa: E402
from sparsebert.format import read_model, spec, write_model  # noqa: E402

from conftest import SENTENCES, checkpoint_with_tokenizer, make_model, random_inputs  # noqa: E402
from test_families import family_inputs, make_family_model  # noqa: E402
from test_format import assert_rejected, build, split  # noqa: E402

# Written from the requirement, not read from sparsebert: the three tables, and nothing else, may be float16.
TABLES = ("embeddings.word_embeddings", "embeddings.position_embeddings", "embeddings.token_type_embeddings")
F16_U = 2.0**-11  # float16's unit roundoff: rounding to nearest moves a normal value by at most this much of it
F16_HALF_SUBNORMAL = 2.0**-25  # ... and a value below float16's normal range by at most half its smallest step
F32_U = 2.0**-24
THREADS = 2


def export_pair(source, tmp_path, **kwargs):
    """The same export with fp32 and with fp16 tables: {precision: (path, report)}."""
    made = {}
    for embeddings in ("fp32", "fp16"):
        path = tmp_path / f"{embeddings}.sbert"
        made[embeddings] = path, sparsebert.export(source, path, verbose=False, embeddings=embeddings, **kwargs)
    return made


def rounded_tables_file(fp32_path, out):
    """The fp32 file with its tables rounded to float16 and stored back as float32: what the fp16 file must run."""
    packed = read_model(fp32_path)
    tensors = dict(packed.tensors)
    for name in TABLES:
        tensors[name] = tensors[name].astype(np.float16).astype(np.float32)
    write_model(out, packed.config, packed.linears, tensors, packed.producer, packed.header.get("tokenizer"))
    return out


def cosine(a, b) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def run(path, inputs, **kwargs):
    return SparseEngine.load(path, num_threads=THREADS).run(inputs, output_hidden_states=True, **kwargs)


# --------------------------------------------------------------------------------------------------------------
# The file, and what the engine runs
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family, head", [("Bert", "ForSequenceClassification"), ("Roberta", "ForTokenClassification"),
                                          ("DistilBert", "ForQuestionAnswering"), ("Bert", "ForMaskedLM"),
                                          ("Roberta", "ForMaskedLM")])
def test_each_family_runs_exactly_the_rounded_tables(family, head, tmp_path):
    model = make_family_model(family, head, seed=len(family) + len(head))
    extra = {"head": "masked_lm"} if head == "ForMaskedLM" else {}
    made = export_pair(model, tmp_path, **extra)
    fp32, fp16 = (read_model(made[e][0]) for e in ("fp32", "fp16"))
    assert (fp32.layout_revision, fp16.layout_revision) == (2, 3)
    assert fp32.linears == fp16.linears
    assert set(fp32.tensors) == set(fp16.tensors)
    for name, stored in fp16.tensors.items():
        if name in TABLES:
            assert stored.dtype == np.float16, name
            np.testing.assert_array_equal(stored, fp32.tensors[name].astype(np.float16), err_msg=name)
        else:  # LayerNorms, linears, biases: the bytes of the fp32 file
            assert stored.dtype == fp32.tensors[name].dtype and stored.tobytes() == fp32.tensors[name].tobytes(), name
    assert fp16.producer["embeddings"] == "fp16"

    # Bitwise what the fp32 engine computes on the rounded tables (a masked-LM head's tied decoder included): the
    # widening is exact and nothing else changed. And not bitwise the fp32 file's: the rounding is really there.
    inputs = family_inputs(family, [13, 6], pad_inside=True)
    kwargs = {"logits_at": [[0, 2], [1, 4]]} if extra else {}
    ours = run(made["fp16"][0], inputs, **kwargs)
    expected = run(rounded_tables_file(made["fp32"][0], tmp_path / "rounded.sbert"), inputs, **kwargs)
    plain = run(made["fp32"][0], inputs, **kwargs)
    assert set(ours) == set(expected)
    for key, value in ours.items():
        np.testing.assert_array_equal(value, expected[key], err_msg=key)
        assert not np.array_equal(value, plain[key]), key


def float16_bound(packed, inputs) -> np.ndarray:
    """Per element, how far the embedding LayerNorm's output may move when each value of the three tables is
    rounded to float16 (a BERT: positions 0..S-1), plus both engines' own float32 rounding.

    Token e = w + p + t, each value moved by at most A = 2^-11 (|w| + |p| + |t|) (+ a subnormal's half step per
    table). Centring, c = e - mean(e), moves each c_j by at most A_j + mean(A); so rms(dc) <= R = rms(A + mean(A)).
    With s = sqrt(mean(c^2) + eps) (1-Lipschitz in rms(c), so s' >= s - R) and z = c / s,
    z' - z = dc / s' + c (s - s') / (s s'), hence |z'_i - z_i| <= (|dc_i| + |z_i| R) / (s - R), and the output
    gamma z + beta moves by |gamma_i| times that. Not first order: a rigorous bound."""
    c = packed.config
    tables = [packed.float32_array(n).astype(np.float64) for n in TABLES]
    ids, types = inputs["input_ids"], inputs["token_type_ids"]
    positions = np.broadcast_to(np.arange(ids.shape[1]), ids.shape)
    rows = [tables[0][ids], tables[1][positions], tables[2][types]]
    e, magnitude = sum(rows), sum(np.abs(r) for r in rows)
    moved = F16_U * magnitude + 3 * F16_HALF_SUBNORMAL
    shift = moved.mean(-1, keepdims=True)
    centred = e - e.mean(-1, keepdims=True)
    s = np.sqrt(np.square(centred).mean(-1, keepdims=True) + c["layer_norm_eps"])
    z = centred / s
    r = np.sqrt(np.square(moved + shift).mean(-1, keepdims=True))
    gamma, beta = (np.abs(packed.tensors[f"embeddings.layer_norm.{k}"]).astype(np.float64) for k in ("weight", "bias"))
    bound = gamma * (moved + shift + np.abs(z) * r) / (s - r)
    # Each engine's own float32 rounding, of the sums of H terms (mean, variance) and the rest: (H + 16) u on each
    # part (the token's values and their mean over s, z, the output's two terms).
    spread = (magnitude + magnitude.mean(-1, keepdims=True)) / s
    slack = 2 * (c["hidden_size"] + 16) * F32_U * (gamma * (np.abs(z) + spread + 1) + beta)
    return bound + slack


def assert_within_float16_bound(fp32_path, fp16_path, inputs) -> float:
    """The embedding output of the two files, within float16_bound; returns the largest share of it used."""
    a, b = (run(p, inputs)["hidden_states"][0].astype(np.float64) for p in (fp16_path, fp32_path))
    bound = float16_bound(read_model(fp32_path), inputs)
    used = np.abs(a - b) / bound
    worst = np.unravel_index(np.argmax(used), used.shape)
    assert used.max() <= 1, f"at {worst}: |difference| {abs(a - b)[worst]:.3g} > bound {bound[worst]:.3g}"
    return float(used.max())


def test_the_embedding_output_moves_within_the_float16_bound(tmp_path):
    model = make_model("base", seed=5, vocab_size=300, max_position_embeddings=80)
    made = export_pair(model, tmp_path)
    inputs = random_inputs(300, [80, 41, 7], seed=2)
    used = assert_within_float16_bound(made["fp32"][0], made["fp16"][0], inputs)
    # The bound is one the rounding comes near (0.46 of it here); bfloat16's 2^-8 breaks it (3.4 times it).
    assert used > 0.2, used


@pytest.mark.slow
def test_real_minilm(minilm_dir, minilm_batch, tmp_path):
    """all-MiniLM-L6-v2 as it is published: the embedding output within the bound, and the figures the README and
    export()'s docstring give (measured on 60 sentences by benchmarks/embeddings_fp16.py) on SENTENCES."""
    made = export_pair(minilm_dir, tmp_path)
    assert_within_float16_bound(made["fp32"][0], made["fp16"][0], minilm_batch)
    a, b = (run(made[e][0], minilm_batch)["last_hidden_state"].astype(np.float64) for e in ("fp16", "fp32"))
    mask = minilm_batch["attention_mask"].astype(bool)
    assert 0 < np.abs(a[mask] - b[mask]).max() < 1e-3 and cosine(a[mask], b[mask]).min() > 1 - 1e-7
    embed = {e: np.stack(sparsebert.pipeline("sentence-embedding", made[e][0])(SENTENCES)) for e in made}
    assert cosine(embed["fp16"], embed["fp32"]).min() > 1 - 1e-7
    sizes = {e: made[e][0].stat().st_size for e in made}
    assert sizes["fp32"] - sizes["fp16"] == 11917824 * 2  # (30522 + 512 + 2) x 384 values, 2 bytes fewer each


# --------------------------------------------------------------------------------------------------------------
# Size and reports
# --------------------------------------------------------------------------------------------------------------


def test_the_tables_bytes_halve_and_the_report_says_so(tmp_path):
    model = sparsebert.pruning.prune_bert_(make_model("base", seed=6, vocab_size=3000), 0.9)
    made = export_pair(model, tmp_path)
    entries = {e: read_model(made[e][0]).header["tensors"] for e in made}
    tables = sum(entries["fp32"][n]["nbytes"] for n in TABLES)
    for name, entry in entries["fp32"].items():
        expected = entry["nbytes"] // 2 if name in TABLES else entry["nbytes"]
        assert entries["fp16"][name]["nbytes"] == expected, name
    sizes = {e: made[e][0].stat().st_size for e in made}
    # Half the tables' bytes, give or take the 64-byte alignment of the tensors after them and of the header.
    assert abs(sizes["fp32"] - sizes["fp16"] - tables // 2) < 4 * 64, (sizes, tables)

    reports = {e: made[e][1] for e in made}
    assert reports["fp16"].file_bytes == sizes["fp16"]
    # The dense fp32 model is the same whatever the file stores; the whole-file line uses the file's real size.
    assert reports["fp16"].dense_model_bytes == reports["fp32"].dense_model_bytes
    whole, embeddings = reports["fp16"].summary().splitlines()[:2]
    ratio = reports["fp16"].dense_model_bytes / sizes["fp16"]
    assert whole.startswith("whole model: ") and f"({ratio:.2f}x smaller)" in whole, whole
    share = f"{tables // 2 / sizes['fp16']:.0%} of the file"
    assert embeddings.startswith("embeddings: fp16, widened to fp32 at load") and share in embeddings, embeddings
    assert reports["fp32"].summary().splitlines()[1].startswith("embeddings: fp32 (")


def test_info_says_the_precision(tmp_path, capsys):
    made = export_pair(make_model("base", seed=7), tmp_path)
    for embeddings, revision in (("fp16", 3), ("fp32", 2)):
        assert cli_main(["info", str(made[embeddings][0])]) == 0
        out = capsys.readouterr().out
        assert f"layout_revision {revision}" in out
        assert f"embeddings: {embeddings}" in out
        assert ("widened to fp32 at load" in out) == (embeddings == "fp16")


# --------------------------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------------------------


def test_cli_flag_and_its_error(tmp_path, minilm_dir, capsys):
    _, ckpt = checkpoint_with_tokenizer("base", tmp_path, minilm_dir, max_position_embeddings=64)
    out = tmp_path / "m.sbert"
    assert cli_main(["export", str(ckpt), str(out), "--embeddings", "fp16"]) == 0
    assert "embeddings: fp16" in capsys.readouterr().out
    assert {read_model(out).tensors[n].dtype for n in TABLES} == {np.dtype(np.float16)}
    with pytest.raises(SystemExit) as exit_:
        cli_main(["export", str(ckpt), str(tmp_path / "b.sbert"), "--embeddings", "bf16"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "--embeddings" in err and "'fp32'" in err and "'fp16'" in err, err


def test_python_argument_errors(tmp_path):
    model = make_model("base", seed=8)
    with pytest.raises(ValueError, match="embeddings must be one of 'fp32', 'fp16', got 'half'"):
        sparsebert.export(model, tmp_path / "m.sbert", verbose=False, embeddings="half")
    with torch.no_grad():
        model.embeddings.word_embeddings.weight[5, 3] = 7e4  # beyond float16's largest value, 65504
    with pytest.raises(ValueError, match=r"embeddings.word_embeddings holds 70000.*embeddings='fp32'"):
        sparsebert.export(model, tmp_path / "m.sbert", verbose=False, embeddings="fp16")
    assert not (tmp_path / "m.sbert").exists()
    sparsebert.export(model, tmp_path / "m.sbert", verbose=False)  # fp32 keeps it


def test_int8_with_fp16_tables_calibrates_against_a_twin_with_the_same_tables(tmp_path):
    model = sparsebert.pruning.prune_bert_(make_model("sequence_classification", seed=9), 0.9, block=4)
    path = tmp_path / "q.sbert"
    sparsebert.export(model, path, verbose=False, quantize="int8", embeddings="fp16")
    packed = read_model(path)
    assert packed.layout_revision == 3
    assert {m["layout"] for n, m in packed.linears.items() if n.startswith("layers.")} == {"block4_int8"}
    assert {packed.tensors[n].dtype for n in TABLES} == {np.dtype(np.float16)}
    # The stored agreement is the int8 file's against a float file with the same fp16 tables, on the calibration's
    # random tokens (16 x 80, seed 0): recomputed here, it is that figure, not the one against fp32 tables.
    calibration = packed.producer["calibration"]
    ids = {"input_ids": np.random.default_rng(0).integers(1, 97, size=(16, 80))}
    float16_twin, float32_twin = tmp_path / "f16.sbert", tmp_path / "f32.sbert"
    sparsebert.export(model, float16_twin, verbose=False, embeddings="fp16")
    sparsebert.export(model, float32_twin, verbose=False)
    ours = SparseEngine.load(path).run(ids)["last_hidden_state"].astype(np.float64)
    diffs = {twin: float(np.abs(ours - SparseEngine.load(twin).run(ids)["last_hidden_state"]).max())
             for twin in (float16_twin, float32_twin)}
    assert calibration["max_abs_diff"] == pytest.approx(diffs[float16_twin], rel=1e-6)
    assert calibration["max_abs_diff"] != pytest.approx(diffs[float32_twin], rel=1e-5)  # 1e-3 apart here
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f16.sbert", "f32.sbert", "q.sbert"]


def test_onnx_source(tmp_path):
    pytest.importorskip("onnxruntime")
    from test_onnx_import import onnx_export

    model = make_family_model("Bert", "ForSequenceClassification", seed=10, sparsity=0.9)
    path = onnx_export(model, tmp_path / "onnx")
    out = tmp_path / "m.sbert"
    report = sparsebert.export(path, out, verbose=False, embeddings="fp16")
    # ONNX Runtime is compared with the packing before its tables were rounded: the graph check stays at 1e-4.
    note = "its float packing (fp32 weights and embedding tables) checked against ONNX Runtime on the same file"
    assert note in report.notes
    assert float(report.notes.split("max |difference| ")[1].split()[0]) <= 1e-4
    assert {read_model(out).tensors[n].dtype for n in TABLES} == {np.dtype(np.float16)}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.sbert", "onnx"]


# --------------------------------------------------------------------------------------------------------------
# The reader
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fp16_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("fp16") / "m.sbert"
    sparsebert.export(make_model("base", seed=11), path, verbose=False, embeddings="fp16")
    return path


def test_float16_is_refused_outside_the_tables(fp16_file, tmp_path, monkeypatch):
    packed = read_model(fp16_file)
    tensors = dict(packed.tensors)
    tensors["embeddings.layer_norm.weight"] = tensors["embeddings.layer_norm.weight"].astype(np.float16)
    bad = tmp_path / "bad.sbert"
    with pytest.raises(ValueError, match="refusing to write"):  # the writer runs the reader's rules
        write_model(bad, packed.config, packed.linears, tensors, packed.producer)
    # Written by a writer that allows float16 everywhere, the reader and the engine refuse it, naming the tensor.
    with monkeypatch.context() as patched:
        patched.setattr(spec, "array_dtypes", lambda name: ("float32", "float16"))
        write_model(bad, packed.config, packed.linears, tensors, packed.producer)
    message = r"'embeddings.layer_norm.weight' is float16\[40\], expected float32\[40\]"
    for load in (read_model, SparseEngine.load):
        with pytest.raises(ModelFormatError, match=message):
            load(bad)


def test_the_reader_checks_float16_tables_as_any_tensor(fp16_file, tmp_path):
    data = fp16_file.read_bytes()
    fv, lr, header, payload = split(data)
    start = len(data) - len(payload)
    for name in TABLES:
        entry = header["tensors"][name]
        assert entry["dtype"] == "float16" and entry["offset"] % 64 == 0
        assert entry["nbytes"] == 2 * int(np.prod(entry["shape"]))
        assert zlib.crc32(payload[entry["offset"]:entry["offset"] + entry["nbytes"]]) == entry["crc32"]
        flipped = bytearray(data)
        flipped[start + entry["offset"] + entry["nbytes"] // 2] ^= 4
        assert_rejected(tmp_path, bytes(flipped), match=f"'{name}' fails its CRC check")
    # The token type table (2 x 40 values, 160 bytes) is followed by zeros up to the next 64-byte offset.
    name = "embeddings.token_type_embeddings"
    entry = header["tensors"][name]
    end = entry["offset"] + entry["nbytes"]
    assert end % 64
    gap = bytearray(data)
    gap[start + end] = 1
    assert_rejected(tmp_path, bytes(gap), match="non-zero bytes in the padding")
    # Sizes of another dtype's, and a misaligned offset, under a header CRC that agrees.
    for key, value, message in (("nbytes", 2 * entry["nbytes"], "shape \\[2, 40\\] of float16 needs 160"),
                                ("nbytes", entry["nbytes"] - 2, "needs 160"),
                                ("offset", entry["offset"] + 2, "not a multiple of 64")):
        changed = json.loads(json.dumps(header))
        changed["tensors"][name][key] = value
        assert_rejected(tmp_path, build(fv, lr, changed, payload), match=message)


def _with_revision(data: bytes, revision: int) -> bytes:
    """The file with another layout revision in its preamble and a header CRC that agrees (spec.py's layout)."""
    data = bytearray(data)
    struct.pack_into("<I", data, 12, revision)
    (header_nbytes,) = struct.unpack_from("<Q", data, 16)
    crc = zlib.crc32(bytes(data[:24]) + bytes(data[32:32 + header_nbytes])) & 0xFFFFFFFF
    struct.pack_into("<I", data, 24, crc)
    return bytes(data)


def test_a_reader_that_knows_revision_2_refuses_it_as_newer(fp16_file, tmp_path, monkeypatch):
    plain = tmp_path / "plain.sbert"
    sparsebert.export(make_model("base", seed=11), plain, verbose=False)
    monkeypatch.setattr(spec, "LAYOUT_REVISION", 2)  # what sparsebert read before float16 tables
    read_model(plain)  # files without float16 are still revision 2
    with pytest.raises(ModelFormatError, match=r"layout_revision 3, newer than this sparsebert supports "
                                               r"\(layout_revision 2\); upgrade sparsebert"):
        read_model(fp16_file)


def test_a_float16_file_must_say_revision_3(fp16_file, tmp_path):
    data = fp16_file.read_bytes()
    relabelled = tmp_path / "r2.sbert"
    relabelled.write_bytes(_with_revision(data, 2))
    with pytest.raises(ModelFormatError, match="float16 tensors, which need layout_revision 3, but has "
                                               "layout_revision 2"):
        read_model(relabelled)
    same = tmp_path / "r3.sbert"
    same.write_bytes(_with_revision(data, 3))  # the helper itself changes nothing else
    read_model(same)
