// How an ISA folder contributes kernels. dispatch.cc builds a table by starting from the scalar one and applying,
// in order, every level the requested ISA includes and the CPU has (as ONNX Runtime's MLAS upgrades its platform
// table): a level sets the entries it implements and inherits the rest from the levels below it.
#pragma once

#include "kernels/kernels.h"

namespace sparsebert {

enum class Isa { kAvx2, kAvx512, kAvx512Vnni, kNeon, kNeonDotprod };

// The kernels written once over kernels/simd/ (spmm_csr, spmm_block4, finish_rows, gemm, gemm_wt, layer_norm,
// softmax_cols, fma_peak): kernels/simd/instantiate.cc, compiled once per SIMD ISA, specializes this.
template <Isa I>
void add_simd_kernels(KernelTable& table);

// What an ISA folder implements on its own (its int8.cc): quantize and/or spmm_block4_i8.
template <Isa I>
void add_int8_kernels(KernelTable& table);

namespace ref {
// The scalar table: every entry set, the baseline of every ISA and the oracle of the tests.
KernelTable table();
}  // namespace ref

}  // namespace sparsebert
