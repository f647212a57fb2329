"""Structured compaction (convert/compaction.py): heads and FFN neurons that cannot change the output are removed,
constants folded into biases, and the engine still matches transformers and the uncompacted export."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import sparsebert  # noqa: E402
from sparsebert import SparseEngine  # noqa: E402
from sparsebert.cli import main as cli_main  # noqa: E402
from sparsebert.errors import ModelFormatError  # noqa: E402
from sparsebert.format import read_model  # noqa: E402

from conftest import (  # noqa: E402
    AVAILABLE_ISAS, apply_plan_, assert_close, encoder_linears, make_model, prune_matrix_, random_inputs,
    torch_forward,
)
from test_engine_vs_torch import assert_matches_torch  # noqa: E402

HEAD_DIM = 12  # hidden 48, 4 heads: a multiple of 4, so block4 output projections may lose heads too


def structured_model(hidden_act="gelu", block=1, seed=0):
    """A 3-layer model with heads and neurons of every removable kind (see the assertions below). Pruned to 60%,
    sparse enough for sparse layouts and too dense for random pruning to zero a whole row or column."""
    model = make_model("sequence_classification", seed=seed, num_hidden_layers=3, hidden_size=48,
                       num_attention_heads=4, intermediate_size=74, hidden_act=hidden_act)
    for _, linears in encoder_linears(model):
        for linear in linears:
            prune_matrix_(linear.weight, 0.6, block)
    d = HEAD_DIM
    with torch.no_grad():
        layers = model.bert.encoder.layer
        # layer 0: head 1 silent (its output columns are zero); head 3 constant (value rows zero, value bias not)
        layers[0].attention.output.dense.weight[:, 1 * d:2 * d] = 0
        layers[0].attention.self.value.weight[3 * d:4 * d] = 0
        # layer 1: every head silent -> one is kept
        layers[1].attention.output.dense.weight[:] = 0
        # FFN: layer 0 neurons 0..3 silent (down columns zero), 4..7 constant (up rows zero, up bias not);
        # layer 2: neuron 5 silent alone (not a whole aligned group of 4)
        layers[0].output.dense.weight[:, 0:4] = 0
        layers[0].intermediate.dense.weight[4:8] = 0
        layers[2].output.dense.weight[:, 5] = 0
    return model


@pytest.mark.parametrize("hidden_act", ["gelu", "gelu_new", "relu"])
def test_compaction_matches_transformers_and_the_uncompacted_model(hidden_act, tmp_path):
    model = structured_model(hidden_act)
    inputs = random_inputs(model.config.vocab_size, [13, 7, 1], seed=1)
    ref = torch_forward(model, inputs)
    compact_path, plain_path = tmp_path / "compact.sbert", tmp_path / "plain.sbert"
    report = sparsebert.export(model, compact_path, verbose=False)
    sparsebert.export(model, plain_path, verbose=False, compact=False)
    config = read_model(compact_path).config
    assert config["layer_heads"] == [2, 1, 4]
    assert config["layer_intermediate"] == [66, 74, 73]
    assert "structured compaction: 5 of 12 heads and 9 of 222 FFN neurons removed" in str(report)
    assert "layer 0: 2 heads removed (2 kept), 8 neurons removed (66 kept)" in str(report)
    assert "layer_heads" not in read_model(plain_path).config
    for isa in AVAILABLE_ISAS:
        compacted = SparseEngine.load(compact_path, isa=isa).run(inputs)
        assert_matches_torch(compacted, ref, inputs["attention_mask"], what=f"compacted/{hidden_act}/{isa}")
        plain = SparseEngine.load(plain_path, isa=isa).run(inputs)
        for key in plain:  # folded constants round differently from computed ones, by float32 ulps
            assert_close(compacted[key], plain[key], atol=1e-5, what=f"compacted vs plain {key}")


def test_block4_projections_lose_only_aligned_groups(tmp_path):
    model = structured_model(block=4, seed=4)
    path = tmp_path / "m.sbert"
    sparsebert.export(model, path, verbose=False)
    before = read_model(path).config["layer_intermediate"]
    with torch.no_grad():  # make layer 2's silent neuron 5 one of an aligned group of 4 silent neurons: 4..7
        model.bert.encoder.layer[2].output.dense.weight[:, 4:8] = 0
    report = sparsebert.export(model, path, verbose=False)
    config = read_model(path).config
    assert config["layer_heads"] == [2, 1, 4]  # head size 12: block4 alignment survives
    # Neuron 5 alone stayed; the group 4..7 goes. Layer 0's silent 0..3 and constant 4..7 are whole groups
    # (4-block pruning may zero the short trailing group 72..73 as well).
    assert config["layer_intermediate"][2] == before[2] - 4
    assert config["layer_intermediate"][0] in (66, 64)
    layouts = {row.name: row.layout for row in report.rows}
    assert layouts["layers.0.ffn.down"] == layouts["layers.2.ffn.down"] == "block4"
    inputs = random_inputs(model.config.vocab_size, [9, 16], seed=2)
    assert_matches_torch(SparseEngine.load(path).run(inputs), torch_forward(model, inputs), inputs["attention_mask"],
                         what="block4 compacted")


def test_unaligned_heads_stay_in_block4_projections(tmp_path):
    # Head size 10: removing a head's columns would shift the 4-blocks of a block4 output projection.
    model = make_model("base", seed=6, num_hidden_layers=1)
    apply_plan_(model, "block4")
    with torch.no_grad():
        model.encoder.layer[0].attention.output.dense.weight[:, 10:20] = 0
    path = tmp_path / "m.sbert"
    sparsebert.export(model, path, verbose=False)
    assert read_model(path).config.get("layer_heads", [4])[0] == 4


def test_info_lists_the_compaction(tmp_path, capsys):
    path = tmp_path / "m.sbert"
    sparsebert.export(structured_model(), path, verbose=False)
    assert cli_main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "structured compaction: 5 of 12 heads and 9 of 222 FFN neurons removed" in out
    assert "layer 1: 3 heads removed (1 kept), 0 neurons removed (74 kept)" in out


def test_no_compaction_leaves_the_config_alone(tmp_path):
    model = make_model("base", seed=8, num_hidden_layers=2)
    for _, linears in encoder_linears(model):
        for linear in linears:
            prune_matrix_(linear.weight, 0.6)  # no whole row or column zero
    path = tmp_path / "m.sbert"
    report = sparsebert.export(model, path, verbose=False)
    assert "layer_heads" not in read_model(path).config and report.notes is None


def test_engine_refuses_counts_that_disagree_with_the_tensors(tmp_path):
    import json
    import struct
    import zlib

    path = tmp_path / "m.sbert"
    sparsebert.export(structured_model(), path, verbose=False)
    data = bytearray(path.read_bytes())
    n = struct.unpack_from("<Q", data, 16)[0]
    header = json.loads(data[32:32 + n])  # format version 2: the header follows its CRC and a reserved word
    header["config"]["layer_heads"] = [3, 1, 4]  # the stored qkv of layer 0 holds 2 heads
    text = json.dumps(header, separators=(",", ":")).encode()
    assert len(text) <= n
    data[32:32 + n] = text + b" " * (n - len(text))
    struct.pack_into("<I", data, 24, zlib.crc32(bytes(data[:24]) + bytes(data[32:32 + n])) & 0xFFFFFFFF)
    bad = tmp_path / "bad.sbert"
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelFormatError, match="qkv.*expected") as info:
        SparseEngine.load(bad)
    assert "CRC" not in str(info.value)


def test_cli_export_no_compact(tmp_path):
    model = structured_model()
    ckpt = tmp_path / "ckpt"
    model.save_pretrained(ckpt, safe_serialization=True)
    assert cli_main(["export", str(ckpt), str(tmp_path / "c.sbert")]) == 0
    assert cli_main(["export", str(ckpt), str(tmp_path / "p.sbert"), "--no-compact"]) == 0
    assert read_model(tmp_path / "c.sbert").config["layer_heads"] == [2, 1, 4]
    assert "layer_heads" not in read_model(tmp_path / "p.sbert").config
