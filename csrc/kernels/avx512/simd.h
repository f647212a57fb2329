// AVX-512 primitives for the kernels written once in kernels/simd/. Included only by files compiled with this
// ISA's flags (kernels/simd/instantiate.cc).
#pragma once

#include <immintrin.h>

namespace sparsebert {
namespace avx512 {

struct Simd {
  using V = __m512;
  static constexpr int kLanes = 16;
  static constexpr int kSpmmVecs = 4;   // sparse tile: 2 rows x 4 vectors = 8 accumulators, 64 tokens
  static constexpr int kGemmRows = 6;   // dense tile: 6 rows x 4 vectors = 24 accumulators
  static constexpr int kGemmVecs = 4;
  static constexpr int kNormVecs = 4;

  static V zero() { return _mm512_setzero_ps(); }
  static V set1(float v) { return _mm512_set1_ps(v); }
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V sub(V a, V b) { return _mm512_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V div(V a, V b) { return _mm512_div_ps(a, b); }
  static V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V fnmadd(V a, V b, V c) { return _mm512_fnmadd_ps(a, b, c); }
  static V max(V a, V b) { return _mm512_max_ps(a, b); }
  static V min(V a, V b) { return _mm512_min_ps(a, b); }
  static V sqrt(V a) { return _mm512_sqrt_ps(a); }
  static V abs(V a) { return _mm512_abs_ps(a); }
  static V copysign(V mag, V sign) {
    const V sign_bit = _mm512_castsi512_ps(_mm512_set1_epi32(static_cast<int>(0x80000000u)));
    return _mm512_or_ps(_mm512_andnot_ps(sign_bit, mag), _mm512_and_ps(sign_bit, sign));
  }
  static V round(V a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  // p * 2^n for integral n in [-126, 127].
  static V ldexp(V p, V n) { return _mm512_scalef_ps(p, n); }
  // a < b ? t : f, lane by lane.
  static V select_lt(V a, V b, V t, V f) { return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, b, _CMP_LT_OQ), f, t); }
};

}  // namespace avx512
}  // namespace sparsebert
