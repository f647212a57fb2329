// AVX-512 dense GEMM, instantiated from kernels/simd/gemm.inl.
#include <immintrin.h>

#include <type_traits>

#include "kernels/kernels.h"

namespace sparsebert {
namespace avx512 {
#include "kernels/kernel_decls.inl"
namespace {
#include "kernels/avx512/simd.inl"
#include "kernels/simd/vmath.inl"
#include "kernels/simd/gemm.inl"
}  // namespace

void gemm(int32_t m, int32_t n, int32_t k, const float* w, int64_t ldw, const float* x, int64_t ldx, float* y,
          int64_t ldy, const Epilogue& ep) {
  gemm_impl<Simd, false>(m, n, k, w, ldw, x, ldx, y, ldy, ep);
}

void gemm_wt(int32_t m, int32_t n, int32_t k, const float* w, int64_t ldw, const float* x, int64_t ldx, float* y,
             int64_t ldy, const Epilogue& ep) {
  gemm_impl<Simd, true>(m, n, k, w, ldw, x, ldx, y, ldy, ep);
}

}  // namespace avx512
}  // namespace sparsebert
