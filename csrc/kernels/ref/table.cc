#include "kernels/ref/kernels_ref.h"

namespace sparsebert {
namespace ref {

KernelTable table() { return KernelTable{"scalar", spmm_csr, spmm_block4, finish_rows, gemm, gemm_wt, layer_norm, softmax_cols, fma_peak,
                                           quantize, spmm_block4_i8, "scalar", false}; }

}  // namespace ref
}  // namespace sparsebert
