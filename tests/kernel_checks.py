"""What every kernel-table case shares (tests/test_kernel_table.py): the ISAs, one check of a kernel result
against its reference, and the error bounds the float checks derive from fp32 arithmetic."""

from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np

from sparsebert import _core

from conftest import ACT_ULPS, FP32_U, activation_ref

ISAS = _core.available_isas()
U = FP32_U
F32 = np.float32
F64 = np.float64
FLT_MAX = float(np.finfo(np.float32).max)
#: SIMD code may flush denormals (FTZ/DAZ): results below the smallest normal float may become 0 (as in conftest).
FLOOR = 4 * float(np.finfo(np.float32).tiny)
ACTIVATIONS = ("none", "gelu", "gelu_tanh", "relu", "tanh")
#: Token counts just around the vector (8 / 16 lanes) and tile (32 / 64 tokens) edges.
PARTIAL_TOKENS = (7, 15, 17, 63, 65, 130)
#: fp32 lanes of one vector register: what fma_peak counts per FMA instruction.
LANES = {"scalar": 1, "neon": 4, "neon_dotprod": 4, "avx2": 8, "avx512": 16}
#: Relative error of the kernels' exp: the SIMD vexp is Cephes' expf polynomial, ~2 ulp on [-87, 88]
#: (csrc/kernels/simd/vmath.inl), and 2 ulp are at most 4 u relative; std::exp is within 1 ulp.
EXP_REL = 4 * U


def gamma(n):
    """Higham's gamma_n: |fl(sum of n products) - exact| <= gamma_n * sum |products|, any order, FMA or not."""
    return n * U / (1 - n * U)


class Check(NamedTuple):
    what: str
    got: np.ndarray
    want: np.ndarray
    tol: Optional[np.ndarray] = None  # element-wise bound on |got - want|; None: bitwise equality
    per_isa: bool = False  # differs between ISAs by design (fma_peak counts lanes): not compared with scalar


def _bits(a):
    a = np.ascontiguousarray(a)
    return a.view(f"u{a.itemsize}") if a.dtype.kind == "f" else a


def assert_check(what, got, want, tol):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    if tol is None:
        assert got.dtype == want.dtype, f"{what}: dtype {got.dtype}, expected {want.dtype}"
        bad = np.flatnonzero(_bits(got) != _bits(want))  # bitwise: -0.0 is not 0.0
        if bad.size:
            at = np.unravel_index(bad[0], got.shape)
            raise AssertionError(f"{what}: {bad.size}/{got.size} elements differ bitwise; first at {at}: "
                                 f"got {got[at]!r}, expected {want[at]!r}")
        return
    assert got.dtype == np.float32, f"{what}: dtype {got.dtype}, expected float32"
    tol = np.broadcast_to(np.asarray(tol, F64), want.shape)
    assert np.isfinite(tol).all(), f"{what}: an infinite bound would check nothing"
    err = np.abs(got.astype(F64) - want)
    ok = err <= tol  # False for NaN
    if not ok.all():
        at = np.unravel_index(np.argmax(np.where(ok, -np.inf, np.nan_to_num(err - tol, nan=np.inf))), err.shape)
        raise AssertionError(f"{what}: {int((~ok).sum())}/{err.size} elements out of bound; worst at {at}: got "
                             f"{got[at]!r}, expected {want[at]!r}, |err| = {err[at]:.3g} > bound {tol[at]:.3g}")


def epilogue_bound(mag, roundings, pre, activation, residual=None):
    """Bound on |fp32 act(s) + residual - exact| where s, of exact value `pre`, is a sum formed with `roundings`
    rounded steps (products and additions of a chain, gamma_n) over terms of total magnitude `mag`.

    Without an activation a kernel may fold the residual into the sum (the sparse and dense kernels start their
    accumulators from bias + residual), so it counts as one more term. Otherwise the activation propagates the
    sum's error by at most its Lipschitz constant, adds its own (ACT_ULPS u max(1, |pre|) for the transcendental
    ones, none for relu) and the residual add rounds once.
    """
    if residual is not None and activation == "none":
        return gamma(roundings + 1) * (mag + np.abs(residual)) + FLOOR
    lipschitz = 1.13 if activation in ("gelu", "gelu_tanh") else 1.0  # max of gelu' ~ 1.129
    tol = lipschitz * gamma(roundings) * mag
    if activation in ("gelu", "gelu_tanh", "tanh"):
        tol = tol + ACT_ULPS * U * np.maximum(1.0, np.abs(pre))
    if residual is not None:
        tol = tol + U * (np.abs(activation_ref(pre, activation)) + np.abs(residual) + tol)
    return tol + FLOOR
