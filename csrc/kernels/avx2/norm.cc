// AVX2 + FMA LayerNorm and column softmax, instantiated from kernels/simd/norm.inl.
#include <immintrin.h>

#include <type_traits>

#include "kernels/kernels.h"

namespace sparsebert {
namespace avx2 {
#include "kernels/kernel_decls.inl"
namespace {
#include "kernels/avx2/simd.inl"
#include "kernels/simd/vmath.inl"
#include "kernels/simd/norm.inl"
}  // namespace

void layer_norm(int32_t features, int32_t n, const float* x, int64_t ldx, float* y, int64_t ldy,
                const float* gamma, const float* beta, float eps) {
  layer_norm_impl<Simd>(features, n, x, ldx, y, ldy, gamma, beta, eps);
}

void softmax_cols(int32_t m, int32_t n, float* s, int64_t lds, float scale, const uint8_t* keep) {
  softmax_cols_impl<Simd>(m, n, s, lds, scale, keep);
}

}  // namespace avx2
}  // namespace sparsebert
