// AVX-512 activation quantization for the int8 kernels (kernels.h, QuantizeFn): the float32 steps of the scalar
// reference in the same order, so the bytes are identical. Up to 4 vectors (64 tokens) at a time: each vector's
// running min and max is a dependency chain, and four of them in flight hide the latency.
#include <immintrin.h>

#include "kernels/compile_time_count.h"
#include "kernels/isa.h"

namespace sparsebert {
namespace {

constexpr int kRound = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;

// max(v, 0) first: it returns its second operand for a NaN v, as the reference's clamp gives 0.
inline __m512 clamp_u8(__m512 v) { return _mm512_min_ps(_mm512_max_ps(v, _mm512_setzero_ps()), _mm512_set1_ps(255.0f)); }

template <int NV>
void quantize_vectors(int32_t k, const float* x, int64_t ldx, uint8_t* xq, int64_t ldq, float* scale,
                      int32_t* zero) {
  const __m512 zero_f = _mm512_setzero_ps(), top = _mm512_set1_ps(255.0f), one = _mm512_set1_ps(1.0f);
  const __m512 inf = _mm512_set1_ps(__builtin_inff());
  __m512 lo[NV], hi[NV];
  for (int v = 0; v < NV; ++v) lo[v] = hi[v] = zero_f;
  for (int32_t f = 0; f < k; ++f) {
    for (int v = 0; v < NV; ++v) {
      const __m512 x_f = _mm512_loadu_ps(x + f * ldx + 16 * v);
      lo[v] = _mm512_min_ps(x_f, lo[v]);
      hi[v] = _mm512_max_ps(x_f, hi[v]);
    }
  }
  __m512 inv[NV], z[NV];
  __m512i zi[NV];
  for (int v = 0; v < NV; ++v) {
    __m512 s = _mm512_div_ps(_mm512_sub_ps(hi[v], lo[v]), top);
    const __mmask16 ok = _mm512_cmp_ps_mask(s, zero_f, _CMP_GT_OQ) & _mm512_cmp_ps_mask(s, inf, _CMP_LT_OQ);
    s = _mm512_mask_blend_ps(ok, one, s);
    inv[v] = _mm512_div_ps(one, s);
    z[v] = clamp_u8(_mm512_roundscale_ps(_mm512_mul_ps(_mm512_sub_ps(zero_f, lo[v]), inv[v]), kRound));
    zi[v] = _mm512_cvttps_epi32(z[v]);
    _mm512_storeu_ps(scale + 16 * v, s);
    _mm512_storeu_si512(zero + 16 * v, zi[v]);
  }
  const int32_t blocks = (k + 3) / 4;
  for (int32_t b = 0; b < blocks; ++b) {
    for (int v = 0; v < NV; ++v) {
      __m512i word = _mm512_setzero_si512();
      for (int l = 0; l < 4; ++l) {
        const int32_t f = 4 * b + l;
        __m512i q = zi[v];
        if (f < k) {
          const __m512 r = _mm512_roundscale_ps(_mm512_mul_ps(_mm512_loadu_ps(x + f * ldx + 16 * v), inv[v]), kRound);
          q = _mm512_cvttps_epi32(clamp_u8(_mm512_add_ps(r, z[v])));
        }
        word = _mm512_or_si512(word, _mm512_slli_epi32(q, 8 * l));
      }
      _mm512_storeu_si512(xq + (b * ldq + 16 * v) * 4, word);
    }
  }
}

void quantize(int32_t k, int32_t n, const float* x, int64_t ldx, uint8_t* xq, int64_t ldq, float* scale,
              int32_t* zero) {
  for (int32_t t0 = 0; t0 < n; t0 += 64) {
    const int32_t vectors = (n - t0 + 15) / 16;
    const float* xt = x + t0;
    uint8_t* qt = xq + t0 * 4;
    with_count<4>(vectors, [&](auto nv) {
      quantize_vectors<decltype(nv)::value>(k, xt, ldx, qt, ldq, scale + t0, zero + t0);
    });
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
