"""int8 export and engine: the real all-MiniLM-L6-v2 weights pruned to 90% in 4-blocks, int8 against fp32
(the issue's accuracy bar), plus the file format of the block4_int8 layout and the export options."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import sparsebert  # noqa: E402
from sparsebert import ModelFormatError, SparseEngine  # noqa: E402
from sparsebert.format import read_model  # noqa: E402
from sparsebert.format.layouts import check_linear_arrays  # noqa: E402
from sparsebert.pruning import prune_bert_  # noqa: E402

from conftest import apply_plan_, make_model, random_inputs  # noqa: E402

TEXTS = [line for line in (Path(__file__).parent / "data" / "sentences.txt").read_text().splitlines() if line]


def _export_pair(model, tmp_path, tokenizer=None):
    fp32, int8 = tmp_path / "fp32.sbert", tmp_path / "int8.sbert"
    sparsebert.export(model, fp32, verbose=False, tokenizer=tokenizer)
    report = sparsebert.export(model, int8, verbose=False, tokenizer=tokenizer, quantize="int8")
    return fp32, int8, report


@pytest.fixture(scope="module")
def minilm_pruned(minilm_dir):
    model = transformers.AutoModel.from_pretrained(str(minilm_dir), attn_implementation="eager").float().eval()
    prune_bert_(model, 0.9, block=4)
    return model


@pytest.mark.slow
def test_sentence_embeddings_int8_vs_fp32_on_real_minilm(minilm_pruned, minilm_dir, tmp_path):
    assert len(TEXTS) >= 50
    fp32, int8, report = _export_pair(minilm_pruned, tmp_path, tokenizer=minilm_dir)
    assert {r.layout for r in report.rows if r.name.startswith("layers.")} == {"block4_int8"}
    embed = {path: sparsebert.pipeline("feature-extraction", path)(TEXTS, pooling="mean") for path in (fp32, int8)}
    a, b = np.stack(embed[int8]).astype(np.float64), np.stack(embed[fp32]).astype(np.float64)
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cosine.min() >= 0.99, (cosine.min(), TEXTS[int(cosine.argmin())])
    # int8 is really in use: not bitwise the fp32 result.
    assert np.abs(a - b).max() > 0


@pytest.mark.slow
def test_classification_int8_vs_fp32_on_real_minilm(minilm_dir, tmp_path):
    from tokenizers import Tokenizer

    torch.manual_seed(0)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        str(minilm_dir), num_labels=3, attn_implementation="eager").float().eval()
    prune_bert_(model, 0.9, block=4)
    fp32, int8, _ = _export_pair(model, tmp_path)
    tok = Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    # 240 distinct sentence pairs (with token types) besides the 60 single sentences.
    rng = np.random.default_rng(0)
    all_pairs = [(i, j) for i in range(len(TEXTS)) for j in range(len(TEXTS)) if i != j]
    pairs = [(TEXTS[i], TEXTS[j]) for i, j in (all_pairs[k] for k in rng.choice(len(all_pairs), 240, replace=False))]
    engines = {p: SparseEngine.load(p) for p in (fp32, int8)}
    agree = total = 0
    for batch in [[(t,) for t in TEXTS]] + [pairs[i:i + 40] for i in range(0, len(pairs), 40)]:
        enc = tok.encode_batch([b if len(b) == 2 else b[0] for b in batch])
        inputs = {"input_ids": np.array([e.ids for e in enc]),
                  "attention_mask": np.array([e.attention_mask for e in enc]),
                  "token_type_ids": np.array([e.type_ids for e in enc])}
        la, lb = (engines[p].run(inputs)["logits"] for p in (int8, fp32))
        agree += int((la.argmax(1) == lb.argmax(1)).sum())
        total += la.shape[0]
    assert total >= 300
    assert agree / total >= 0.99, f"{agree}/{total}"


def test_int8_file_round_trip_and_report(tmp_path):
    model = make_model("sequence_classification", seed=4, num_hidden_layers=2)
    apply_plan_(model, "unstructured")  # unstructured nonzeros grouped into zero-filled 4-blocks
    path = tmp_path / "q.sbert"
    report = sparsebert.export(model, path, verbose=False, quantize="int8")
    packed = read_model(path)
    assert packed.layout_revision == 2
    for name, meta in packed.linears.items():
        if name.startswith("layers."):
            assert meta["layout"] == "block4_int8"
            assert 0 < meta["block_fill"] < 0.6  # 10% of weights in 4-blocks: mostly fill
            assert 0 < meta["weight_error"] < 0.02
            assert packed.tensors[f"{name}.block_values"].dtype == np.int8
        else:
            assert meta["layout"] != "block4_int8"  # pooler and head stay fp32
    calibration = packed.producer["calibration"]
    assert calibration["inputs"].startswith("random tokens")
    assert calibration["min_token_cosine"] > 0.99 and calibration["argmax_agreement"] >= 0.9
    # Per layer: the int8 hidden state after each layer against the fp32 one, recomputed here from the int8 file
    # and a float export of the same model on the calibration's random tokens.
    layers = calibration["layers"]
    assert len(layers) == 2 and layers[-1]["min_token_cosine"] == calibration["min_token_cosine"]
    float_path = tmp_path / "f.sbert"
    sparsebert.export(model, float_path, verbose=False)
    ids = np.random.default_rng(0).integers(1, 97, size=(16, 80))
    ours = SparseEngine.load(path).run({"input_ids": ids}, output_hidden_states=True)["hidden_states"]
    theirs = SparseEngine.load(float_path).run({"input_ids": ids}, output_hidden_states=True)["hidden_states"]
    for i, layer in enumerate(layers):
        rms = np.sqrt(np.square(ours[i + 1] - theirs[i + 1], dtype=np.float64).sum() /
                      np.square(theirs[i + 1], dtype=np.float64).sum())
        assert 0 < layer["relative_rms"] < 0.05
        assert layer["relative_rms"] == pytest.approx(rms, rel=1e-3), i
    float_path.unlink()
    assert "int8 vs fp32" in str(report)
    out = SparseEngine.load(path).run(random_inputs(97, [9, 4]))
    assert np.isfinite(out["logits"]).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.sbert"]  # calibration files removed


@pytest.mark.slow
def test_calibration_text_file(tmp_path, minilm_dir, minilm_pruned):
    texts = tmp_path / "calibration.txt"
    texts.write_text("\n".join(TEXTS[:10]) + "\n\n")
    path = tmp_path / "q.sbert"
    sparsebert.export(minilm_pruned, path, verbose=False, quantize="int8", tokenizer=minilm_dir,
                      calibration=texts)
    assert read_model(path).producer["calibration"]["inputs"] == "10 texts from calibration.txt"


def test_export_quantize_errors(tmp_path):
    model = make_model("base", num_hidden_layers=1)
    with pytest.raises(ValueError, match="quantize"):
        sparsebert.export(model, tmp_path / "a.sbert", verbose=False, quantize="int4")
    with pytest.raises(ValueError, match="calibration"):
        sparsebert.export(model, tmp_path / "a.sbert", verbose=False, calibration=tmp_path / "x.txt")
    with pytest.raises(FileNotFoundError, match="calibration"):
        sparsebert.export(model, tmp_path / "a.sbert", verbose=False, quantize="int8", calibration=tmp_path / "x.txt")
    (tmp_path / "t.txt").write_text("hello\n")
    with pytest.raises(ValueError, match="tokenizer"):
        sparsebert.export(model, tmp_path / "a.sbert", verbose=False, quantize="int8", calibration=tmp_path / "t.txt")
    assert not any(p.suffix == ".sbert" or "calibration" in p.name for p in tmp_path.iterdir())


def test_cli_quantize(tmp_path, capsys):
    from sparsebert.cli import main

    model = make_model("sequence_classification", seed=5, num_hidden_layers=1)
    apply_plan_(model, "block4")
    ckpt = tmp_path / "ckpt"
    model.save_pretrained(ckpt, safe_serialization=True)
    assert main(["export", str(ckpt), str(tmp_path / "q.sbert"), "--quantize", "int8"]) == 0
    assert main(["info", str(tmp_path / "q.sbert")]) == 0
    out = capsys.readouterr().out
    assert "block4_int8" in out and "int8 vs fp32 on random tokens" in out and "weight error" in out
    assert "hidden state after each layer:\n  layer 0: relative RMS difference" in out
    assert main(["export", str(ckpt), str(tmp_path / "x.sbert"), "--calibration", "t.txt"]) == 2
    # Another writer's producer records that do not read as ours are shown as they are, not a crash.
    from sparsebert.format import write_model

    packed = read_model(tmp_path / "q.sbert")
    producer = {**packed.producer, "calibration": {"inputs": "odd"}, "quantized_checkpoint": [1, 2]}
    write_model(tmp_path / "odd.sbert", packed.config, packed.linears, dict(packed.tensors), producer)
    assert main(["info", str(tmp_path / "odd.sbert")]) == 0
    out = capsys.readouterr().out
    assert "calibration: {'inputs': 'odd'}" in out and "quantized_checkpoint: [1, 2]" in out


@pytest.mark.parametrize("case, fragment", [
    ("negative scale", "scale of row"),
    ("nan scale", "scale of row"),
    ("value past K", "past the last input"),
    ("K too large", "at most 32768"),
])
def test_block4_int8_arrays_are_checked_before_cpp(case, fragment):
    arrays = {"block_ptr": np.array([0, 1, 2], np.int32), "block_col": np.array([0, 1], np.uint16),
              "block_values": np.array([[1, 2, 3, 4], [5, 6, 0, 0]], np.int8),
              "scales": np.array([0.5, 0.25], np.float32), "bias": np.zeros(2, np.float32)}
    n_cols = 6
    if case == "negative scale":
        arrays["scales"][0] = -0.5
    elif case == "nan scale":
        arrays["scales"][1] = np.nan
    elif case == "value past K":
        arrays["block_values"][1, 3] = 1
    elif case == "K too large":
        n_cols = 40000
    with pytest.raises(ValueError, match=fragment):
        check_linear_arrays("block4_int8", 2, n_cols, arrays)
    assert issubclass(ModelFormatError, ValueError)


def test_quantized_checkpoints_are_refused_clearly(tmp_path):
    """What qat.py cannot read (tests/test_qat_import.py covers what it can): quantized tensors outside torch's
    quantized modules, and transformers' quantization_config (bitsandbytes, GPTQ, ...)."""
    import json

    import warnings

    model = make_model("base", num_hidden_layers=1)
    odd = copy.deepcopy(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's quantized tensors are deprecated, still shipped
        odd.pooler.dense.register_buffer("packed", torch.quantize_per_tensor(torch.ones(4), 0.1, 0, torch.qint8))
    with pytest.raises(sparsebert.UnsupportedModelError, match="torch-quantized weights that sparsebert cannot read"):
        sparsebert.export(odd, tmp_path / "a.sbert", verbose=False)
    ckpt = tmp_path / "ckpt"
    model.save_pretrained(ckpt, safe_serialization=True)
    config = json.loads((ckpt / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_8bit": True}
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(sparsebert.UnsupportedModelError, match="quantized.*bitsandbytes"):
        sparsebert.export(ckpt, tmp_path / "b.sbert", verbose=False)
    assert not list(tmp_path.glob("*.sbert"))
