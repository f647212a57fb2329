"""Every SIMD path computes bitwise the same model outputs, fp32 and int8: the shared SIMD kernels use only
correctly rounded operations (add, mul, fma, division, square root) in the same order on every ISA
(kernels/simd/vmath.inl). A reciprocal estimate in the GELU or tanh (rcp14, rcpps, vrecpe differ in their bits)
breaks this, and an int8 model shows it first: a last-bit difference moves an activation to the next code of
the quantizer. The scalar path is the tests' independent reference and is not part of this promise."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import sparsebert  # noqa: E402

from conftest import AVAILABLE_ISAS, apply_plan_, make_model, random_inputs  # noqa: E402

SIMD_ISAS = [isa for isa in AVAILABLE_ISAS if isa != "scalar"]
needs_two = pytest.mark.skipif(len(SIMD_ISAS) < 2, reason=f"one SIMD path on this CPU ({SIMD_ISAS})")


@needs_two
@pytest.mark.parametrize("hidden_act", ["gelu", "gelu_new"])  # the erf GELU, and the tanh one
@pytest.mark.parametrize("quantize", [None, "int8"])
def test_simd_paths_give_bitwise_the_same_outputs(tmp_path, hidden_act, quantize):
    model = make_model("sequence_classification", seed=3, hidden_act=hidden_act, num_hidden_layers=3,
                       intermediate_size=148)  # pooler tanh and a classifier on top
    apply_plan_(model, "block4" if quantize else "mixed")
    path = tmp_path / "model.sbert"
    sparsebert.export(model, path, verbose=False, quantize=quantize)
    inputs = random_inputs(97, [70, 33, 1, 64], seed=5)  # two tiles, a partial one, padding
    outputs = {isa: sparsebert.SparseEngine.load(path, isa=isa, num_threads=2).run(inputs, output_hidden_states=True)
               for isa in SIMD_ISAS}
    first = SIMD_ISAS[0]
    for isa in SIMD_ISAS[1:]:
        for name, want in outputs[first].items():
            assert np.array_equal(outputs[isa][name], want), (
                f"{name}: {isa} differs from {first} by {np.abs(outputs[isa][name] - want).max():.3g}")
