// The AVX-512 kernel table. Compiled with AVX-512 flags like the kernels, reached only through dispatch.cc.
#include "kernels/kernels.h"

namespace sparsebert {
namespace avx512 {
#include "kernels/kernel_decls.inl"

KernelTable table() { return KernelTable{"avx512", spmm_csr, spmm_block4, finish_rows, gemm, gemm_wt, layer_norm, softmax_cols, fma_peak}; }

}  // namespace avx512
}  // namespace sparsebert
