"""Writes tests/data/optimum/<family>/{model.onnx,config.json}: tiny pruned BERT, RoBERTa and DistilBERT task
models exported by Optimum's ONNX exporter, which sparsebert's ONNX import must read (tests/test_onnx_import.py).

Optimum is not a dependency of sparsebert (it pins transformers 4), so the files are generated once, in a
separate environment, and committed:

    python -m venv /tmp/optimum-env && /tmp/optimum-env/bin/pip install torch==2.13.0 optimum-onnx
    /tmp/optimum-env/bin/python tools/make_optimum_fixtures.py
"""

from __future__ import annotations

import os
import shutil
import tempfile

import torch
import transformers
from optimum.exporters.onnx import main_export

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "optimum")
MODELS = {
    # family: (model class, config class, Optimum task, config arguments)
    "bert": (transformers.BertForSequenceClassification, transformers.BertConfig, "text-classification",
             dict(hidden_size=40, num_hidden_layers=2, num_attention_heads=4, intermediate_size=74, num_labels=3)),
    "roberta": (transformers.RobertaForQuestionAnswering, transformers.RobertaConfig, "question-answering",
                dict(hidden_size=40, num_hidden_layers=2, num_attention_heads=4, intermediate_size=74,
                     pad_token_id=1, type_vocab_size=1, num_labels=2, layer_norm_eps=1e-5)),
    "distilbert": (transformers.DistilBertForTokenClassification, transformers.DistilBertConfig,
                   "token-classification", dict(dim=40, n_layers=2, n_heads=4, hidden_dim=74, num_labels=3)),
}


def main() -> None:
    for family, (model_cls, config_cls, task, kwargs) in MODELS.items():
        torch.manual_seed(0)
        model = model_cls(config_cls(vocab_size=97, max_position_embeddings=40, **kwargs)).eval()
        with torch.no_grad():
            for name, p in model.named_parameters():
                if p.dim() == 2 and ".layer." in name:  # encoder linears: 80% magnitude-pruned
                    threshold = p.abs().flatten().kthvalue(int(0.8 * p.numel())).values
                    p[p.abs() <= threshold] = 0
                elif name.endswith("bias"):
                    p.copy_(0.1 * torch.randn(p.shape))
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(os.path.join(tmp, "ckpt"))
            main_export(os.path.join(tmp, "ckpt"), output=os.path.join(tmp, "onnx"), task=task)
            dest = os.path.join(OUT, family)
            os.makedirs(dest, exist_ok=True)
            for name in ("model.onnx", "config.json"):
                shutil.copy(os.path.join(tmp, "onnx", name), os.path.join(dest, name))
        print(family, "->", dest)


if __name__ == "__main__":
    main()
