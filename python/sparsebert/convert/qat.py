"""Already-quantized torch checkpoints whose int8 weight grid can be read (QDQ ONNX graphs: onnx_import.py).

Two sources carry it:

* quantization-aware training before ``convert`` (``torch.ao.quantization.prepare_qat``): every linear keeps its
  latent float weight and a weight fake-quantizer whose ``scale`` and ``zero_point`` are in the state dict as
  ``<linear>.weight_fake_quant.scale`` / ``.zero_point``; the network computes with
  ``(clamp(rint(w / scale) + zero_point, qmin, qmax) - zero_point) * scale``. A model object tells qmin/qmax;
  a saved state dict does not, so there they are taken to be [-128, 127], the range of every torch qint8 weight
  fake-quantizer except qnnpack's symmetric one ([-127, 127]: export such a model as an object).
* torch-quantized modules in a model object (``quantize_dynamic``, or QAT / static ``convert``): each keeps an
  int8 weight with its scale(s) and zero point(s) in packed parameters, read through ``module.weight()``.

Either way the checkpoint's weights become the values the quantized network computes with (float32,
``(q - zero_point) * scale``), and each such linear gets one scale per output row (a per-tensor scale is
repeated; NaN for a row whose ``q - zero_point`` int8 cannot hold). With ``quantize="int8"`` the exporter stores
the integers ``q - zero_point`` under those scales unchanged (quantization.py), instead of choosing a grid of its
own; without it the model is exported in float with the dequantized weights. Activation scales (the input and
output fake-quantizers, a static model's input scale) are not used: the engine quantizes activations per token
at run time (kernels.h).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import UnsupportedModelError
from .hf_names import LAYER_NAMES

FAKE_QUANT = ".weight_fake_quant"
QINT8_RANGE = (-128, 127)  # torch's qint8 weight fake-quantizers (default, per-channel and x86 QAT qconfigs)


def zero_point_names(names: Any) -> list[str]:
    """The integer state-dict entries this module reads (a loader that keeps only float tensors keeps these)."""
    return [n for n in names if n.endswith(FAKE_QUANT + ".zero_point")]


def fake_quantized(weights: dict[str, np.ndarray], ranges: dict[str, tuple[int, int]] | None = None,
                   source: str = "the checkpoint") -> dict[str, np.ndarray]:
    """Replaces, in ``weights``, each fake-quantized linear's latent weight by the weight it computes with and
    drops the fake-quantizer entries; returns ``{weight name: per-row float32 scales}``. ``ranges``: the
    quantizers' (qmin, qmax) by weight name, when a model object tells them."""
    scales: dict[str, np.ndarray] = {}
    for key in [k for k in weights if k.endswith(FAKE_QUANT + ".scale")]:
        linear = key[: -len(FAKE_QUANT + ".scale")]
        name = linear + ".weight"
        weight = weights.get(name)
        zero_point = weights.get(linear + FAKE_QUANT + ".zero_point")
        if weight is None or weight.ndim != 2:
            continue  # not a linear's weight quantizer: left as it is, and never read by the mappers
        where = f"{source}: {linear}{FAKE_QUANT}"
        if zero_point is None:
            raise UnsupportedModelError(f"{where} has a scale but no zero_point")
        qmin, qmax = (ranges or {}).get(name, QINT8_RANGE)
        scale = _per_row(np.asarray(weights[key], np.float64), weight.shape[0], where + ".scale")
        zero = _per_row(np.asarray(zero_point, np.float64), weight.shape[0], where + ".zero_point")
        if not (qmin <= zero.min() and zero.max() <= qmax):
            raise UnsupportedModelError(f"{where}.zero_point lies outside the quantizer's range [{qmin}, {qmax}]"
                                        + ("" if ranges else " (assumed: torch's qint8; export the model object, "
                                           "which tells its range)"))
        if not (np.isfinite(scale).all() and (scale > 0).all()):
            raise UnsupportedModelError(f"{where}.scale must be finite and > 0")
        scale32 = scale.astype(np.float32)
        # As torch's fake quantization computes it: multiply by the float32 inverse scale, round half to even.
        inverse = (np.float32(1) / scale32)[:, None]
        q = np.clip(np.rint(weight.astype(np.float32) * inverse) + zero[:, None], qmin, qmax)
        weights[name], scales[name] = on_grid(q - zero[:, None], scale32)
    for key in [k for k in weights if FAKE_QUANT + "." in k]:
        del weights[key]
    return scales


def fake_quant_ranges(model: Any) -> dict[str, tuple[int, int]]:
    """(qmin, qmax) of each weight fake-quantizer in a model object, by the weight's state-dict name."""
    ranges = {}
    for name, module in model.named_modules():
        quantizer = getattr(module, "weight_fake_quant", None)
        if quantizer is not None and hasattr(quantizer, "quant_min") and hasattr(quantizer, "quant_max"):
            ranges[(name + "." if name else "") + "weight"] = (int(quantizer.quant_min), int(quantizer.quant_max))
    return ranges


def torch_quantized_modules(model: Any) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], set[str]]:
    """Weights and biases of the torch-quantized modules of a model object, dequantized to float32; per-row
    scales of the 2-D ones (linears); and the module names read (their packed-parameter
    state-dict entries are covered)."""
    import torch

    weights, scales, names = {}, {}, set()
    for name, module in model.named_modules():
        if not hasattr(module, "_packed_params") or not callable(getattr(module, "weight", None)):
            continue
        prefix = name + "." if name else ""
        where = f"{type(model).__name__}: {name} ({type(module).__name__})"
        try:
            weight = module.weight()
            bias = module.bias() if callable(getattr(module, "bias", None)) else None
        except Exception as exc:  # torch raises RuntimeError for packed formats it cannot unpack
            raise UnsupportedModelError(f"{where}: cannot read its quantized weight ({exc})") from None
        names.add(name)
        if bias is not None:
            weights[prefix + "bias"] = bias.detach().to(torch.float32).numpy()
        if not weight.is_quantized:  # float16 dynamic quantization: a float weight
            weights[prefix + "weight"] = weight.detach().to(torch.float32).numpy()
            continue
        grid = _torch_grid(weight, where) if weight.dim() == 2 else None
        if grid is None:
            weights[prefix + "weight"] = weight.dequantize().to(torch.float32).numpy()
            continue
        weights[prefix + "weight"], scales[prefix + "weight"] = on_grid(*grid)
    return weights, scales, names


def _torch_grid(weight: Any, where: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(q - zero_point as float64 [N, K], float32 scales [N]) of a quantized 2-D weight; None for schemes with
    float zero points (embeddings), which are read as their dequantized values."""
    import torch

    scheme = weight.qscheme()
    rows = weight.shape[0]
    if scheme in (torch.per_tensor_affine, torch.per_tensor_symmetric):
        scale = np.full(rows, weight.q_scale(), np.float64)
        zero = np.full(rows, weight.q_zero_point(), np.float64)
    elif scheme in (torch.per_channel_affine, torch.per_channel_symmetric):
        if weight.q_per_channel_axis() != 0:
            raise UnsupportedModelError(f"{where}: per-channel scales along axis {weight.q_per_channel_axis()}; "
                                        "sparsebert's int8 weights have one scale per output row (axis 0)")
        scale = weight.q_per_channel_scales().to(torch.float64).numpy()
        zero = weight.q_per_channel_zero_points().to(torch.float64).numpy()
    else:
        return None
    integers = weight.int_repr().to(torch.float64).numpy() - zero[:, None]
    if not (np.isfinite(scale).all() and (scale > 0).all()):
        raise UnsupportedModelError(f"{where}: scales must be finite and > 0")
    return integers, scale.astype(np.float32)


def _per_row(value: np.ndarray, rows: int, where: str) -> np.ndarray:
    if value.size == 1:
        return np.full(rows, float(value.reshape(-1)[0]))
    if value.shape != (rows,):
        raise UnsupportedModelError(f"{where} has shape {list(value.shape)}; expected one value or one per output "
                                    f"row ({rows})")
    return value


def on_grid(integers: np.ndarray, scale32: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The float32 weight ``integers * scale`` (per row) and its per-row scales for the exporter (int8_rows)."""
    return (integers * scale32[:, None]).astype(np.float32), int8_rows(integers, scale32)


def int8_rows(integers: np.ndarray, scale32: np.ndarray) -> np.ndarray:
    """The scales, NaN for rows whose integers (q - zero point) int8 cannot hold: a row quantized asymmetrically
    over [0, 255] (torch's fused observer does that to rows with no negative weight). The exporter quantizes
    those rows' weights (the values the network computes with) on a symmetric grid of its own."""
    fits = ((integers >= -128) & (integers <= 127)).all(axis=1) if integers.size else np.ones(len(scale32), bool)
    return np.where(fits, scale32, np.float32(np.nan)).astype(np.float32)


def layer_row_scales(weight_scales: dict[str, np.ndarray], family: str, layers: int) -> dict[str, np.ndarray]:
    """Per-row scales of the encoder-layer linears (the ones int8 export packs), under their file names
    (hf_names.py): ``layers.{i}.attention.qkv`` stacks Q, K and V as the mapper does. Rows of a linear that the
    checkpoint did not quantize get NaN: the exporter chooses their scale itself."""
    if not weight_scales:
        return {}
    result = {}
    for i in range(layers):
        names = LAYER_NAMES[family]
        for ours in ("attention.qkv", "attention.output", "ffn.up", "ffn.down"):
            theirs = names["qkv" if ours == "attention.qkv" else ours]
            parts = [p.format(i=i) + ".weight" for p in (theirs if isinstance(theirs, tuple) else (theirs,))]
            if not any(p in weight_scales for p in parts):
                continue
            rows = [weight_scales.get(p) for p in parts]
            known = next(r for r in rows if r is not None)
            # Q, K and V have the same number of rows: a part without scales gets that many NaNs.
            result[f"layers.{i}.{ours}"] = np.concatenate(
                [r if r is not None else np.full(known.shape, np.nan, np.float32) for r in rows])
    return result


def grid_summary(weight_scales: dict[str, np.ndarray], row_scales: dict[str, np.ndarray],
                 int8: bool) -> dict[str, Any] | None:
    """What an export kept of a quantized checkpoint's int8 grid, for the file's producer record and the report
    (report.describe_quantized_checkpoint); None for a float checkpoint. ``int8``: whether the export is."""
    if not weight_scales:
        return None
    if not int8:
        return {"linears": len(weight_scales), "int8": False}
    return {"linears": len(row_scales), "int8": True, "rows": sum(len(v) for v in row_scales.values()),
            "rows_regridded": sum(int(np.isnan(v).sum()) for v in row_scales.values())}
