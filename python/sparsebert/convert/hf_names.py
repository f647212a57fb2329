"""Where each family keeps an encoder layer's weights, under the names of the canonical layer tensors
(ARCHITECTURE.md): the exporter reads them from a checkpoint, the benchmark harness writes them back
(bench/models.py). ``{i}`` is the layer; linears and LayerNorms add ``.weight`` / ``.bias``."""

from __future__ import annotations

LAYER_NAMES: dict[str, dict[str, str | tuple[str, str, str]]] = {
    "bert": {"qkv": ("encoder.layer.{i}.attention.self.query", "encoder.layer.{i}.attention.self.key",
                     "encoder.layer.{i}.attention.self.value"),
             "attention.output": "encoder.layer.{i}.attention.output.dense",
             "attention.layer_norm": "encoder.layer.{i}.attention.output.LayerNorm",
             "ffn.up": "encoder.layer.{i}.intermediate.dense", "ffn.down": "encoder.layer.{i}.output.dense",
             "ffn.layer_norm": "encoder.layer.{i}.output.LayerNorm"},
    "distilbert": {"qkv": ("transformer.layer.{i}.attention.q_lin", "transformer.layer.{i}.attention.k_lin",
                           "transformer.layer.{i}.attention.v_lin"),
                   "attention.output": "transformer.layer.{i}.attention.out_lin",
                   "attention.layer_norm": "transformer.layer.{i}.sa_layer_norm",
                   "ffn.up": "transformer.layer.{i}.ffn.lin1", "ffn.down": "transformer.layer.{i}.ffn.lin2",
                   "ffn.layer_norm": "transformer.layer.{i}.output_layer_norm"},
}
LAYER_NAMES["roberta"] = LAYER_NAMES["bert"]  # RoBERTa's encoder is named as BERT's
