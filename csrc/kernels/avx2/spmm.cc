// AVX2 + FMA sparse x dense kernels (unstructured and 4-block), instantiated from kernels/simd/spmm.inl.
#include <immintrin.h>

#include <type_traits>

#include "kernels/kernels.h"

namespace sparsebert {
namespace avx2 {
#include "kernels/kernel_decls.inl"
namespace {
#include "kernels/avx2/simd.inl"
#include "kernels/simd/vmath.inl"
#include "kernels/simd/spmm.inl"
}  // namespace

void spmm_csr(const PairedView& w, int32_t pair_begin, int32_t pair_end, const float* x, int64_t ldx, float* y,
              int64_t ldy, int32_t n, const Epilogue& ep) {
  spmm_impl<Simd, 1>(w, pair_begin, pair_end, x, ldx, y, ldy, n, ep);
}

void finish_rows(const int32_t* rows, int32_t count, float* y, int64_t ldy, int32_t n, const Epilogue& ep) {
  finish_rows_impl<Simd>(rows, count, y, ldy, n, ep);
}

void spmm_block4(const PairedView& w, int32_t pair_begin, int32_t pair_end, const float* x, int64_t ldx, float* y,
                 int64_t ldy, int32_t n, const Epilogue& ep) {
  spmm_impl<Simd, 4>(w, pair_begin, pair_end, x, ldx, y, ldy, n, ep);
}

}  // namespace avx2
}  // namespace sparsebert
