// AVX-512 activation quantization for the int8 kernels (kernels.h, QuantizeFn): 16 tokens per vector, the
// float32 steps of the scalar reference in the same order, so the bytes are identical.
#include <immintrin.h>

#include "kernels/isa.h"

namespace sparsebert {
namespace {

void quantize(int32_t k, int32_t n, const float* x, int64_t ldx, uint8_t* xq, int64_t ldq, float* scale,
              int32_t* zero) {
  const int32_t blocks = (k + 3) / 4;
  const __m512 zero_f = _mm512_setzero_ps(), top = _mm512_set1_ps(255.0f), one = _mm512_set1_ps(1.0f);
  const __m512 inf = _mm512_set1_ps(__builtin_inff());
  constexpr int kRound = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
  // max(v, 0) first: it returns its second operand for a NaN v, as the reference's clamp gives 0.
  auto clamp = [&](__m512 v) { return _mm512_min_ps(_mm512_max_ps(v, zero_f), top); };
  for (int32_t t0 = 0; t0 < n; t0 += 16) {
    __m512 lo = zero_f, hi = zero_f;
    for (int32_t f = 0; f < k; ++f) {
      const __m512 v = _mm512_loadu_ps(x + f * ldx + t0);
      lo = _mm512_min_ps(v, lo);
      hi = _mm512_max_ps(v, hi);
    }
    __m512 s = _mm512_div_ps(_mm512_sub_ps(hi, lo), top);
    const __mmask16 ok = _mm512_cmp_ps_mask(s, zero_f, _CMP_GT_OQ) & _mm512_cmp_ps_mask(s, inf, _CMP_LT_OQ);
    s = _mm512_mask_blend_ps(ok, one, s);
    const __m512 inv = _mm512_div_ps(one, s);
    const __m512 z = clamp(_mm512_roundscale_ps(_mm512_mul_ps(_mm512_sub_ps(zero_f, lo), inv), kRound));
    const __m512i zi = _mm512_cvttps_epi32(z);
    _mm512_storeu_ps(scale + t0, s);
    _mm512_storeu_si512(zero + t0, zi);
    for (int32_t b = 0; b < blocks; ++b) {
      __m512i word = _mm512_setzero_si512();
      for (int l = 0; l < 4; ++l) {
        const int32_t f = 4 * b + l;
        __m512i q = zi;
        if (f < k) {
          const __m512 v = _mm512_roundscale_ps(_mm512_mul_ps(_mm512_loadu_ps(x + f * ldx + t0), inv), kRound);
          q = _mm512_cvttps_epi32(clamp(_mm512_add_ps(v, z)));
        }
        word = _mm512_or_si512(word, _mm512_slli_epi32(q, 8 * l));
      }
      _mm512_storeu_si512(xq + (b * ldq + t0) * 4, word);
    }
  }
}

}  // namespace

// The int8 product is not here: it needs VNNI (avx512_vnni/), which some AVX-512 CPUs (Skylake-SP) lack; they
// keep the exact AVX2 product the level below set.
template <>
void add_int8_kernels<Isa::kAvx512>(KernelTable& table) {
  table.quantize = quantize;
}

}  // namespace sparsebert
