"""Export the rebuilt ``transformers`` model to ONNX for ONNX Runtime and DeepSparse, and the module PyTorch runs.

``BertOutputs`` wraps the model so that it takes (input_ids, attention_mask, token_type_ids) as int64
positional inputs and returns exactly the outputs sparsebert returns, in ``engine.output_names`` order: every
engine then computes the same graph (pooler and head included).  transformers 5's ``BertModel.forward`` cannot
be traced with positional arguments (its signature has moved on), so the wrapper calls it with keywords.
PyTorch eager runs this same wrapper, so its work is the work in the ONNX file.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np

from ..engine import INPUT_NAMES
from ..format.spec import encoder_spec, max_sequence_length

# Opset 17 has LayerNormalization and is understood by onnxruntime >= 1.13 and by the onnx 1.14 that
# DeepSparse 1.8 pins; newer opsets would lock DeepSparse out.
OPSET = 17
# IR version 8 is what onnx 1.14 (DeepSparse's) writes; newer onnx packages stamp files with versions it refuses.
IR_VERSION = 8
TRACE_SHAPE = (2, 8)  # batch, seq of the example inputs; both axes are exported as dynamic


def bert_outputs(model: Any, config: dict[str, Any]) -> Any:
    """A ``torch.nn.Module`` running ``model`` (BERT, RoBERTa or DistilBERT) on positional int64 inputs and
    returning sparsebert's outputs."""
    import torch

    head, family = config["head"], config.get("model_type", "bert")
    pooler_output = config["has_pooler"] and not config.get("pooler_is_head", False)

    class BertOutputs(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):  # noqa: ANN001 (traced)
            encoder = self.model if head == "none" else getattr(self.model, family)
            if family == "distilbert":
                # No token types; "using" them (times 0) keeps the input in the graph, so every engine is fed
                # the same three inputs.
                out = encoder(input_ids=input_ids + token_type_ids * 0, attention_mask=attention_mask)
            else:
                out = encoder(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            hidden = out.last_hidden_state
            results = [hidden]
            if pooler_output:
                results.append(out.pooler_output)
            # The heads as transformers computes them (dropout is off in eval mode).
            if head == "sequence_classification":
                if family == "bert":
                    results.append(self.model.classifier(out.pooler_output))
                elif family == "roberta":
                    results.append(self.model.classifier(hidden))  # dense + tanh on the first token, out_proj
                else:
                    pooled = torch.relu(self.model.pre_classifier(hidden[:, 0]))
                    results.append(self.model.classifier(pooled))
            elif head == "token_classification":
                results.append(self.model.classifier(hidden))
            elif head == "question_answering":
                logits = self.model.qa_outputs(hidden)
                start, end = logits.split(1, dim=-1)
                results += [start.squeeze(-1), end.squeeze(-1)]
            return tuple(results)

    return BertOutputs().eval()


def _dynamic_axes(names: list[str], config: dict[str, Any]) -> dict[str, dict[int, str]]:
    axes: dict[str, dict[int, str]] = {name: {0: "batch", 1: "seq"} for name in INPUT_NAMES}
    for name in names:
        per_token = name in ("last_hidden_state", "start_logits", "end_logits") or (
            name == "logits" and config["head"] == "token_classification")
        axes[name] = {0: "batch", 1: "seq"} if per_token else {0: "batch"}
    return axes


def export_onnx(model: Any, config: dict[str, Any], path: str | os.PathLike) -> list[str]:
    """Write ``model`` (a ``transformers`` BERT) as an fp32 ONNX file with dynamic batch and sequence axes.

    Returns the output names.  Uses the TorchScript exporter (``dynamo=False``): it is the one that handles
    these models in a few seconds without extra dependencies.
    """
    import onnx
    import torch

    names = list(encoder_spec(config)["outputs"])
    wrapper = bert_outputs(model, config)
    batch, seq = TRACE_SHAPE
    seq = min(seq, max_sequence_length(config))
    rng = np.random.default_rng(0)
    example = (
        # From 2: RoBERTa's pad id (1) would make the traced positions those of padding.
        torch.from_numpy(rng.integers(2, config["vocab_size"], (batch, seq), dtype=np.int64)),
        torch.ones(batch, seq, dtype=torch.int64),
        torch.zeros(batch, seq, dtype=torch.int64),
    )
    path = os.fspath(path)
    with warnings.catch_warnings():
        # Tracer and deprecation notices are expected here and say nothing about the exported graph; the
        # tests check the graph against PyTorch instead.
        warnings.simplefilter("ignore")
        with torch.no_grad():
            torch.onnx.export(wrapper, example, path, input_names=list(INPUT_NAMES), output_names=names,
                              dynamic_axes=_dynamic_axes(names, config), opset_version=OPSET, do_constant_folding=True,
                              dynamo=False)
    proto = onnx.load(path)
    if proto.ir_version > IR_VERSION:
        proto.ir_version = IR_VERSION
        onnx.save(proto, path)
    return names


__all__ = ["IR_VERSION", "OPSET", "bert_outputs", "export_onnx"]
