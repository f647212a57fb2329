// AVX2 int8 kernels (kernels.h): activation quantization, 8 tokens per vector, and the int8 4-block product.
// Without VNNI the product widens to 16 bits and uses vpmaddwd (s16 x s16, pairs summed into exact int32):
// vpmaddubsw would be twice as fast but saturates at 16 bits (255 x 127 x 2 > 32767), which would make the
// result depend on the ISA. Used for AVX-512 CPUs without VNNI too.
#include <immintrin.h>

#include <cstring>

#include "kernels/kernels.h"

namespace sparsebert {
namespace avx2 {
#include "kernels/kernel_decls.inl"

void quantize(int32_t k, int32_t n, const float* x, int64_t ldx, uint8_t* xq, int64_t ldq, float* scale,
              int32_t* zero) {
  const int32_t blocks = (k + 3) / 4;
  const __m256 zero_f = _mm256_setzero_ps(), top = _mm256_set1_ps(255.0f), one = _mm256_set1_ps(1.0f);
  const __m256 inf = _mm256_set1_ps(__builtin_inff());
  constexpr int kRound = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
  // max(v, 0) first: it returns its second operand for a NaN v, as the reference's clamp gives 0.
  auto clamp = [&](__m256 v) { return _mm256_min_ps(_mm256_max_ps(v, zero_f), top); };
  for (int32_t t0 = 0; t0 < n; t0 += 8) {
    __m256 lo = zero_f, hi = zero_f;
    for (int32_t f = 0; f < k; ++f) {
      const __m256 v = _mm256_loadu_ps(x + f * ldx + t0);
      lo = _mm256_min_ps(v, lo);
      hi = _mm256_max_ps(v, hi);
    }
    __m256 s = _mm256_div_ps(_mm256_sub_ps(hi, lo), top);
    const __m256 ok = _mm256_and_ps(_mm256_cmp_ps(s, zero_f, _CMP_GT_OQ), _mm256_cmp_ps(s, inf, _CMP_LT_OQ));
    s = _mm256_blendv_ps(one, s, ok);
    const __m256 inv = _mm256_div_ps(one, s);
    const __m256 z = clamp(_mm256_round_ps(_mm256_mul_ps(_mm256_sub_ps(zero_f, lo), inv), kRound));
    const __m256i zi = _mm256_cvttps_epi32(z);
    _mm256_storeu_ps(scale + t0, s);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(zero + t0), zi);
    for (int32_t b = 0; b < blocks; ++b) {
      __m256i word = _mm256_setzero_si256();
      for (int l = 0; l < 4; ++l) {
        const int32_t f = 4 * b + l;
        __m256i q = zi;
        if (f < k) {
          const __m256 v = _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + f * ldx + t0), inv), kRound);
          q = _mm256_cvttps_epi32(clamp(_mm256_add_ps(v, z)));
        }
        word = _mm256_or_si256(word, _mm256_slli_epi32(q, 8 * l));
      }
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(xq + (b * ldq + t0) * 4), word);
    }
  }
}

namespace {

// A block's 4 s8 weights as s16, repeated for the 4 tokens a 128-bit load of activations covers.
inline __m256i widen_weights(int32_t packed) {
  int8_t w[4];
  std::memcpy(w, &packed, 4);
  const int64_t lanes = static_cast<int64_t>(static_cast<uint16_t>(w[0])) |
                        static_cast<int64_t>(static_cast<uint16_t>(w[1])) << 16 |
                        static_cast<int64_t>(static_cast<uint16_t>(w[2])) << 32 |
                        static_cast<int64_t>(static_cast<uint16_t>(w[3])) << 48;
  return _mm256_set1_epi64x(lanes);
}

// NU units of 8 tokens; unit u keeps two accumulators of pair sums (tokens 8u .. 8u + 3, 8u + 4 .. 8u + 7).
template <int NU>
void rows_chunk(const Int8View& w, int32_t rb, int32_t re, const uint8_t* xq, int64_t ldq, const float* x_scale,
                const int32_t* x_zero, float* y, int64_t ldy, const Epilogue& ep) {
  for (int32_t r = rb; r < re; ++r) {
    __m256i acc[2 * NU];
    for (int u = 0; u < 2 * NU; ++u) acc[u] = _mm256_setzero_si256();
    for (int32_t j = w.ptr[r]; j < w.ptr[r + 1]; ++j) {
      const __m256i wq = widen_weights(w.val[j]);
      const uint8_t* q = xq + static_cast<int64_t>(w.col[j]) * ldq * 4;
      for (int u = 0; u < 2 * NU; ++u) {
        const __m256i x16 = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + 16 * u)));
        acc[u] = _mm256_add_epi32(acc[u], _mm256_madd_epi16(x16, wq));
      }
    }
    const __m256i wsum = _mm256_set1_epi32(w.w_sum[r]);
    const __m256 wscale = _mm256_set1_ps(w.w_scale[r]);
    const __m256 bias = _mm256_set1_ps(ep.bias ? ep.bias[r] : 0.0f);
    for (int u = 0; u < NU; ++u) {
      // Pair sums of tokens 0-3 and 4-7 -> one sum per token, in token order.
      const __m256i sums = _mm256_permute4x64_epi64(_mm256_hadd_epi32(acc[2 * u], acc[2 * u + 1]), 0xD8);
      const __m256i zero = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x_zero + 8 * u));
      const __m256i centred = _mm256_sub_epi32(sums, _mm256_mullo_epi32(zero, wsum));
      const __m256 s = _mm256_mul_ps(_mm256_loadu_ps(x_scale + 8 * u), wscale);
      __m256 out = _mm256_fmadd_ps(_mm256_cvtepi32_ps(centred), s, bias);
      if (ep.residual) out = _mm256_add_ps(out, _mm256_loadu_ps(ep.residual + r * ep.ldr + 8 * u));
      _mm256_storeu_ps(y + r * ldy + 8 * u, out);
    }
  }
}

}  // namespace

void spmm_block4_i8(const Int8View& w, int32_t row_begin, int32_t row_end, const uint8_t* xq, int64_t ldq,
                    const float* x_scale, const int32_t* x_zero, float* y, int64_t ldy, int32_t n,
                    const Epilogue& ep) {
  for (int32_t t0 = 0; t0 < n; t0 += 32) {
    const int nu = n - t0 >= 32 ? 4 : (n - t0 + 7) / 8;
    const uint8_t* q = xq + t0 * 4;
    Epilogue e = ep;
    if (ep.residual) e.residual = ep.residual + t0;
    switch (nu) {
      case 1: rows_chunk<1>(w, row_begin, row_end, q, ldq, x_scale + t0, x_zero + t0, y + t0, ldy, e); break;
      case 2: rows_chunk<2>(w, row_begin, row_end, q, ldq, x_scale + t0, x_zero + t0, y + t0, ldy, e); break;
      case 3: rows_chunk<3>(w, row_begin, row_end, q, ldq, x_scale + t0, x_zero + t0, y + t0, ldy, e); break;
      default: rows_chunk<4>(w, row_begin, row_end, q, ldq, x_scale + t0, x_zero + t0, y + t0, ldy, e); break;
    }
  }
}

}  // namespace avx2
}  // namespace sparsebert
