// The column softmax of bf16 attention, written straight into bf16 pairs (kernels/bf16.h, Bf16SoftmaxPairsFn):
// the fp32 softmax's own passes (kernels/simd/norm.inl, instantiated here for AVX-512), whose last pass, the
// normalisation, stores pairs of rows as bf16 instead of fp32 rows. The values are those of softmax_cols on the
// avx512 path, rounded to bf16.
#include "kernels/avx512/simd.h"
#include "kernels/avx512_bf16/bf16_words.h"
#include "kernels/bf16.h"
#include "kernels/compile_time_count.h"
#include "kernels/kernels.h"

namespace sparsebert {
namespace avx512_bf16 {
namespace {

using Simd = avx512::Simd;

#include "kernels/simd/vmath.inl"
#include "kernels/simd/norm.inl"

template <int NV>
void softmax_pairs_chunk(int32_t m, float* s, int64_t lds, float scale, const uint8_t* keep, uint16_t* dst,
                         int64_t ldd) {
  __m512 inv[NV];
  softmax_exp_chunk<Simd, NV>(m, s, lds, scale, keep, inv);
  // Rows the mask drops hold 0 after the exponentials, and stay 0.
  for (int32_t j = 0; j < m; j += 2) {
    const float* lo = s + j * lds;
    for (int v = 0; v < NV; ++v) {
      const __m512 a = _mm512_mul_ps(_mm512_loadu_ps(lo + 16 * v), inv[v]);
      const __m512 b = j + 1 < m ? _mm512_mul_ps(_mm512_loadu_ps(lo + lds + 16 * v), inv[v]) : _mm512_setzero_ps();
      _mm512_storeu_si512(dst + (j / 2) * ldd + 32 * v, bf16_pair_words(a, b));
    }
  }
}

}  // namespace

void softmax_pairs(int32_t m, int32_t n, float* s, int64_t lds, float scale, const uint8_t* keep, uint16_t* dst,
                   int64_t ldd) {
  constexpr int32_t kChunk = Simd::kNormVecs * Simd::kLanes;
  for (int32_t c0 = 0; c0 < n; c0 += kChunk) {
    const int32_t rest = n - c0;
    const int nv = rest >= kChunk ? Simd::kNormVecs : (rest + Simd::kLanes - 1) / Simd::kLanes;
    with_count<Simd::kNormVecs>(nv, [&](auto vecs) {
      softmax_pairs_chunk<decltype(vecs)::value>(m, s + c0, lds, scale, keep, dst + 2 * c0, ldd);
    });
  }
}

}  // namespace avx512_bf16
}  // namespace sparsebert
