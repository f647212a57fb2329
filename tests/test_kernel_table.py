"""Every entry of the kernel table, called directly at named edge cases, on every ISA this CPU has.

CASES names the edge cases of each kernel in ``_core.KERNELS`` (generated from the C++ table, SPARSEBERT_KERNELS in
csrc/kernels/kernels.h), in the spirit of XNNPACK's m_lt_mr / n_div_nr / k_lt_kblock. A case calls one ISA's table
through ``_core.Kernels(isa)`` and returns checks against references written here from the contracts in kernels.h:

* float kernels: a float64 numpy reference and an element-wise bound derived from the operations the contract
  implies (gamma_n for a sum of n rounded terms in any order, the activation's Lipschitz constant and conftest's
  ACT_ULPS, the exp error for the softmax, first-order propagation through LayerNorm's mean and 1/sqrt). A correct
  kernel cannot exceed it; a wrong index, epilogue or mask is orders of magnitude beyond it.
* quantize and spmm_block4_i8: bitwise equality with an exact reference (integer sums, the contract's float32 steps,
  one correctly rounded fma).
* every SIMD table against the scalar table, the oracle: bitwise for the int8 kernels, within the sum of the two
  bounds for the float kernels (each result is within its bound of the exact value).
"""

from __future__ import annotations

import numpy as np
import pytest

from kernel_cases_dense import finish_rows_cases, gemm_cases, spmm_cases
from kernel_cases_int8 import int8_reference, quantize_cases, split_unbounded, spmm_i8_cases
from kernel_cases_norm import layer_norm_cases, run_fma_peak, softmax_cases
from kernel_checks import F32, F64, ISAS, LANES, assert_check
from sparsebert import _core

from conftest import FOREIGN_ISA


# ------------------------------------------------------------------------------------------------------------------
# The table of cases
# ------------------------------------------------------------------------------------------------------------------

CASES = {
    "spmm_csr": spmm_cases("spmm_csr"),
    "spmm_block4": spmm_cases("spmm_block4"),
    "finish_rows": finish_rows_cases(),
    "gemm": gemm_cases("gemm"),
    "gemm_wt": gemm_cases("gemm_wt"),
    "layer_norm": layer_norm_cases(),
    "softmax_cols": softmax_cases(),
    "fma_peak": {"proportional_to_iterations": run_fma_peak},
    "quantize": quantize_cases(),
    "spmm_block4_i8": spmm_i8_cases(),
}

SIMD_ISAS = tuple(i for i in ISAS if i != "scalar")

#: (kernel, case) -> (the ISAs it fails on, why): known kernel bugs, documented by strict xfails.
KNOWN_BUGS: dict = {}


def _case_params():
    for kernel, cases in CASES.items():
        for case in cases:
            for isa in ISAS:
                bug = KNOWN_BUGS.get((kernel, case))
                marks = [pytest.mark.xfail(strict=True, reason=bug[1])] if bug and isa in bug[0] else []
                yield pytest.param(kernel, case, isa, id=f"{kernel}-{case}-{isa}", marks=marks)


def test_every_kernel_of_the_table_has_cases():
    # A kernel added to SPARSEBERT_KERNELS without cases here (or one removed) fails the suite.
    assert set(CASES) == set(_core.KERNELS), (sorted(set(_core.KERNELS) - set(CASES)),
                                               sorted(set(CASES) - set(_core.KERNELS)))
    assert all(CASES.values()), [k for k, v in CASES.items() if not v]
    assert ISAS[-1] == "scalar" and set(ISAS) <= set(LANES), ISAS


@pytest.mark.parametrize("kernel, case, isa", list(_case_params()))
def test_kernel_case(kernel, case, isa):
    run = CASES[kernel][case]
    kt = _core.Kernels(isa)
    assert kt.isa == isa
    checks = run(kt)
    assert checks
    for c in checks:
        assert_check(f"{kernel}/{case}/{isa}: {c.what}", c.got, c.want, c.tol)
    if isa == "scalar":
        return
    # The scalar table is the oracle: bitwise for exact kernels; else each result is within its bound of the
    # exact value, so the two are within the sum of the bounds.
    for c, o in zip(checks, run(_core.Kernels("scalar"))):
        if not c.per_isa:
            assert_check(f"{kernel}/{case}: {isa} vs scalar: {c.what}", c.got, o.got.astype(F64) if c.tol is not None
                         else o.got, None if c.tol is None else 2 * np.asarray(c.tol))


# ------------------------------------------------------------------------------------------------------------------
# Argument validation: a clear ValueError / TypeError, never a crash
# ------------------------------------------------------------------------------------------------------------------


def _spmm_args(**over):
    # Two pairs over m = 3 rows and x of 5 rows: (0, 1) with two entries, (2, -1) with one.
    args = dict(name="spmm_csr", ptr=np.array([0, 2, 3], np.int32), rows=np.array([0, 1, 2, -1], np.int32),
                idx=np.array([0, 1, 4, 2, 3, 0], np.uint16), val=np.arange(6, dtype=F32),
                pair_begin=0, pair_end=2, x=np.ones((5, 7), F32), m=3)
    args.update(over)
    return args


def _i8_args(**over):
    args = dict(ptr=np.array([0, 1, 3], np.int32), col=np.array([0, 1, 0], np.uint16),
                val=np.array([[1, -2, 3, 4], [5, 6, 7, 8], [9, 10, 0, 0]], np.int8),
                w_scale=np.array([0.1, 0.2], F32), row_begin=0, row_end=2, xq=np.full((2, 5, 4), 7, np.uint8),
                x_scale=np.ones(5, F32), x_zero=np.zeros(5, np.int32))
    args.update(over)
    return args


x4 = np.ones((4, 6), F32)
BAD_CALLS = {
    "spmm: idx past the rows of x": (lambda kt: kt.spmm(**_spmm_args(idx=np.array([0, 1, 5, 2, 3, 0], np.uint16))),
                                     ValueError, "past the rows of x"),
    "spmm_block4: a block past the rows of x": (
        lambda kt: kt.spmm(**_spmm_args(name="spmm_block4", val=np.zeros(24, F32))), ValueError, "past the rows"),
    "spmm: row out of range": (lambda kt: kt.spmm(**_spmm_args(rows=np.array([0, 3, 2, -1], np.int32))),
                               ValueError, "rows must be in"),
    "spmm: first row of a pair -1": (lambda kt: kt.spmm(**_spmm_args(rows=np.array([-1, 1, 2, -1], np.int32))),
                                     ValueError, "rows must be in"),
    "spmm: pair range past the pairs": (lambda kt: kt.spmm(**_spmm_args(pair_end=3)), ValueError, "pair range"),
    "spmm: pair range reversed": (lambda kt: kt.spmm(**_spmm_args(pair_begin=2, pair_end=1)), ValueError, "pair"),
    "spmm: ptr decreasing": (lambda kt: kt.spmm(**_spmm_args(ptr=np.array([0, 2, 1], np.int32))), ValueError, "ptr"),
    "spmm: ptr past the entries": (lambda kt: kt.spmm(**_spmm_args(ptr=np.array([0, 2, 4], np.int32))),
                                   ValueError, "ptr"),
    "spmm: val of the wrong length": (lambda kt: kt.spmm(**_spmm_args(val=np.zeros(5, F32))), ValueError, "val"),
    "spmm: idx int32": (lambda kt: kt.spmm(**_spmm_args(idx=np.array([0, 1, 4, 2, 3, 0], np.int32))),
                        TypeError, "uint16"),
    "spmm: x float64": (lambda kt: kt.spmm(**_spmm_args(x=np.ones((5, 7)))), TypeError, "float32"),
    "spmm: unknown kernel": (lambda kt: kt.spmm(**_spmm_args(name="gemm")), ValueError, "spmm_csr"),
    "finish_rows: row past y": (lambda kt: kt.finish_rows(np.array([0, 4], np.int32), x4), ValueError, "rows"),
    "finish_rows: y float64": (lambda kt: kt.finish_rows(np.array([0], np.int32), np.ones((4, 6))), TypeError,
                               "float32"),
    "finish_rows: unknown activation": (lambda kt: kt.finish_rows(np.array([0], np.int32), x4, activation="swish"),
                                        ValueError, "swish"),
    "finish_rows: bias of the wrong length": (lambda kt: kt.finish_rows(np.array([0], np.int32), x4,
                                                                        bias=np.ones(3, F32)), ValueError, "bias"),
    "gemm: x rows != k": (lambda kt: kt.gemm("gemm", np.ones((3, 5), F32), x4), ValueError, "x"),
    "gemm_wt: x rows != k": (lambda kt: kt.gemm("gemm_wt", np.ones((5, 3), F32), x4), ValueError, "x"),
    "gemm: w float64": (lambda kt: kt.gemm("gemm", np.ones((3, 4)), x4), TypeError, "float32"),
    "gemm: residual of the wrong shape": (lambda kt: kt.gemm("gemm", np.ones((3, 4), F32), x4,
                                                             residual=np.ones((3, 5), F32)), ValueError, "residual"),
    "gemm: unknown kernel": (lambda kt: kt.gemm("spmm_csr", np.ones((3, 4), F32), x4), ValueError, "gemm"),
    "layer_norm: gamma of the wrong length": (lambda kt: kt.layer_norm(x4, np.ones(3, F32), np.ones(4, F32), 1e-5),
                                              ValueError, "gamma"),
    "layer_norm: eps 0": (lambda kt: kt.layer_norm(x4, np.ones(4, F32), np.ones(4, F32), 0.0), ValueError, "eps"),
    "layer_norm: no features": (lambda kt: kt.layer_norm(np.ones((0, 6), F32), np.ones(0, F32), np.ones(0, F32),
                                                         1e-5), ValueError, "features"),
    "softmax_cols: keep all zero": (lambda kt: kt.softmax_cols(x4, 1.0, np.zeros(4, np.uint8)), ValueError, "keep"),
    "softmax_cols: keep bool": (lambda kt: kt.softmax_cols(x4, 1.0, np.ones(4, bool)), TypeError, "uint8"),
    "softmax_cols: keep of the wrong length": (lambda kt: kt.softmax_cols(x4, 1.0, np.ones(5, np.uint8)),
                                               ValueError, "keep"),
    "fma_peak: negative iterations": (lambda kt: kt.fma_peak(-1), ValueError, "iterations"),
    "quantize: x float64": (lambda kt: kt.quantize(np.ones((4, 6))), TypeError, "float32"),
    "quantize: x 1-D": (lambda kt: kt.quantize(np.ones(6, F32)), ValueError, "shape"),
    "quantize: no features": (lambda kt: kt.quantize(np.ones((0, 6), F32)), ValueError, "features"),
    "spmm_block4_i8: col past xq": (lambda kt: kt.spmm_block4_i8(**_i8_args(col=np.array([0, 2, 0], np.uint16))),
                                    ValueError, "col"),
    "spmm_block4_i8: row range past the rows": (lambda kt: kt.spmm_block4_i8(**_i8_args(row_end=3)), ValueError,
                                                "row range"),
    "spmm_block4_i8: ptr not ending at the blocks": (
        lambda kt: kt.spmm_block4_i8(**_i8_args(ptr=np.array([0, 1, 2], np.int32))), ValueError, "ptr"),
    "spmm_block4_i8: val uint8": (lambda kt: kt.spmm_block4_i8(**_i8_args(val=np.ones((3, 4), np.uint8))),
                                  TypeError, "int8"),
    "spmm_block4_i8: x_zero of the wrong length": (
        lambda kt: kt.spmm_block4_i8(**_i8_args(x_zero=np.zeros(4, np.int32))), ValueError, "x_zero"),
}


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("call", list(BAD_CALLS))
def test_bad_arguments_raise(call, isa):
    fn, exc, fragment = BAD_CALLS[call]
    with pytest.raises(exc, match=fragment):
        fn(_core.Kernels(isa))


# Inputs outside the int8 contract (zero points are in [0, 255]; the sums are exact in int32) that the binding
# accepts: the kernels then overflow int32 (undefined behaviour in the scalar C++) and return wrapped values.
def _i8_sums_past_int32(kt):
    nb = 16449  # 16449 blocks x 4 x -128 x 255 = -2147581440 < -2^31 (split for a bounded-pairs table: same sums)
    ptr, col, val = split_unbounded(np.array([0, nb], np.int32), np.arange(nb, dtype=np.uint16),
                                    np.full((nb, 4), -128, np.int8))
    return kt.spmm_block4_i8(ptr, col, val, np.ones(1, F32), 0, 1, np.full((nb, 1, 4), 255, np.uint8),
                             np.ones(1, F32), np.zeros(1, np.int32))


OUTSIDE_THE_INT8_CONTRACT = {
    "spmm_block4_i8: x_zero outside [0, 255]": lambda kt: kt.spmm_block4_i8(
        **_i8_args(x_zero=np.full(5, 2**30, np.int32))),
    "spmm_block4_i8: sums past int32": _i8_sums_past_int32,
}


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("call", list(OUTSIDE_THE_INT8_CONTRACT))
def test_int8_inputs_outside_the_contract_raise(call, isa):
    with pytest.raises(ValueError):
        OUTSIDE_THE_INT8_CONTRACT[call](_core.Kernels(isa))


def test_unknown_isa_raises():
    with pytest.raises(ValueError, match=FOREIGN_ISA):
        _core.Kernels(FOREIGN_ISA)


@pytest.mark.parametrize("isa", ISAS)
def test_unbounded_pairs_only_where_the_table_takes_them(isa):
    # A byte pair of -128s: 2 x 255 x -128 leaves the 16 bits of AVX2's vpmaddubsw. A bounded-pairs table refuses
    # it; any other table computes it exactly.
    kt = _core.Kernels(isa)
    args = _i8_args(val=np.array([[-128, -128, 0, 0], [5, 6, 7, 8], [9, 10, 0, 0]], np.int8),
                    xq=np.full((2, 5, 4), 255, np.uint8))
    if kt.int8_bounded_pairs:
        with pytest.raises(ValueError, match="bounded byte pairs"):
            kt.spmm_block4_i8(**args)
    else:
        want = int8_reference(args["ptr"], args["col"], args["val"], args["w_scale"], (0, 2), args["xq"],
                              args["x_scale"], args["x_zero"])
        assert_check("y", kt.spmm_block4_i8(**args), want, None)
