// The AVX-512 kernel table. Compiled with AVX-512 flags like the kernels, reached only through dispatch.cc.
#include "kernels/cpu_features.h"
#include "kernels/kernels.h"

namespace sparsebert {
namespace avx2 {
void spmm_block4_i8(const Int8View& w, int32_t row_begin, int32_t row_end, const uint8_t* xq, int64_t ldq,
                    const float* x_scale, const int32_t* x_zero, float* y, int64_t ldy, int32_t n,
                    const Epilogue& ep);
}
namespace avx512_vnni {
void spmm_block4_i8(const Int8View& w, int32_t row_begin, int32_t row_end, const uint8_t* xq, int64_t ldq,
                    const float* x_scale, const int32_t* x_zero, float* y, int64_t ldy, int32_t n,
                    const Epilogue& ep);
}
namespace avx512 {
#include "kernels/kernel_decls.inl"

// The int8 product needs VNNI, which some AVX-512 CPUs (Skylake-SP) lack: they get the exact AVX2 kernel.
KernelTable table() {
  const bool vnni = cpu_features().avx512_vnni;
  return KernelTable{"avx512", spmm_csr, spmm_block4, finish_rows, gemm, gemm_wt, layer_norm, softmax_cols, fma_peak,
                     quantize, vnni ? avx512_vnni::spmm_block4_i8 : avx2::spmm_block4_i8,
                     vnni ? "avx512_vnni" : "avx2", !vnni};
}

}  // namespace avx512
}  // namespace sparsebert
