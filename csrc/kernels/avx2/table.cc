// The AVX2 + FMA kernel table. Compiled with AVX2 + FMA flags like the kernels, reached only through dispatch.cc.
#include "kernels/kernels.h"

namespace sparsebert {
namespace avx2 {
#include "kernels/kernel_decls.inl"

KernelTable table() { return KernelTable{"avx2", spmm_csr, spmm_block4, finish_rows, gemm, gemm_wt, layer_norm, softmax_cols, fma_peak,
                                           quantize, spmm_block4_i8, "avx2", true}; }

}  // namespace avx2
}  // namespace sparsebert
