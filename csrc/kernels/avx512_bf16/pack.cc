// fp32 -> bf16 packing for bf16 attention (kernels/bf16.h), with AVX512-BF16's conversion (nearest even). Rows
// past the block are never read: partial vectors use masked loads and stores.
#include <immintrin.h>

#include <algorithm>

#include "kernels/avx512_bf16/bf16_words.h"
#include "kernels/bf16.h"

namespace sparsebert {
namespace avx512_bf16 {
namespace {

__mmask16 first16(int32_t count) { return count >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << std::max(count, 0)) - 1); }
__mmask32 first32(int32_t count) { return count >= 32 ? 0xFFFFFFFFu : (1u << std::max(count, 0)) - 1; }

// Columns [c, c + 16) of rows r and r + 1 (a zero row when r + 1 is past the block) as 16 words, each holding
// row r's value in its low half and row r + 1's in its high half.
__m512i pair_words(int32_t rows, int32_t cols, const float* src, int64_t lds, int32_t r, int32_t c) {
  const __mmask16 m = first16(cols - c);
  const __m512 lo = _mm512_maskz_loadu_ps(m, src + r * lds + c);
  const __m512 hi = r + 1 < rows ? _mm512_maskz_loadu_ps(m, src + (r + 1) * lds + c) : _mm512_setzero_ps();
  return bf16_pair_words(lo, hi);
}

// In place: v[i] word j becomes v[j] word i (a 16 x 16 transpose of 32-bit words).
void transpose16(__m512i v[16]) {
  __m512i t[16], s[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_epi32(v[i], v[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(v[i], v[i + 1]);
  }
  // s[4g + q], in 128-bit lane L, holds column 4L + q of rows 4g .. 4g + 3.
  for (int g = 0; g < 4; ++g) {
    s[4 * g + 0] = _mm512_unpacklo_epi64(t[4 * g], t[4 * g + 2]);
    s[4 * g + 1] = _mm512_unpackhi_epi64(t[4 * g], t[4 * g + 2]);
    s[4 * g + 2] = _mm512_unpacklo_epi64(t[4 * g + 1], t[4 * g + 3]);
    s[4 * g + 3] = _mm512_unpackhi_epi64(t[4 * g + 1], t[4 * g + 3]);
  }
  for (int q = 0; q < 4; ++q) {
    const __m512i x0 = _mm512_shuffle_i32x4(s[q], s[4 + q], 0x44), x1 = _mm512_shuffle_i32x4(s[q], s[4 + q], 0xEE);
    const __m512i y0 = _mm512_shuffle_i32x4(s[8 + q], s[12 + q], 0x44);
    const __m512i y1 = _mm512_shuffle_i32x4(s[8 + q], s[12 + q], 0xEE);
    v[q] = _mm512_shuffle_i32x4(x0, y0, 0x88);
    v[4 + q] = _mm512_shuffle_i32x4(x0, y0, 0xDD);
    v[8 + q] = _mm512_shuffle_i32x4(x1, y1, 0x88);
    v[12 + q] = _mm512_shuffle_i32x4(x1, y1, 0xDD);
  }
}

}  // namespace

void pack_rows(int32_t rows, int32_t cols, const float* src, int64_t lds, uint16_t* dst, int64_t ldd) {
  for (int32_t r = 0; r < rows; ++r)
    for (int32_t c = 0; c < cols; c += 32) {
      const __m512 lo = _mm512_maskz_loadu_ps(first16(cols - c), src + r * lds + c);
      const __m512 hi = _mm512_maskz_loadu_ps(first16(cols - c - 16), src + r * lds + c + 16);
      _mm512_mask_storeu_epi16(dst + r * ldd + c, first32(cols - c),
                               reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(hi, lo)));
    }
}

void pack_pairs(int32_t rows, int32_t cols, const float* src, int64_t lds, uint16_t* dst, int64_t ldd) {
  for (int32_t r = 0; r < rows; r += 2)
    for (int32_t c = 0; c < cols; c += 16)
      _mm512_mask_storeu_epi32(dst + (r / 2) * ldd + 2 * c, first16(cols - c),
                               pair_words(rows, cols, src, lds, r, c));
}

// Pairs of rows become 32-bit words, then 16 x 16 blocks of words are transposed: column c of rows r, r + 1 is the
// word dst[c][r .. r + 1].
void pack_transposed(int32_t rows, int32_t cols, const float* src, int64_t lds, uint16_t* dst, int64_t ldd) {
  for (int32_t r0 = 0; r0 < rows; r0 += 32)
    for (int32_t c0 = 0; c0 < cols; c0 += 16) {
      __m512i v[16];
      for (int p = 0; p < 16; ++p)
        v[p] = r0 + 2 * p < rows ? pair_words(rows, cols, src, lds, r0 + 2 * p, c0) : _mm512_setzero_si512();
      transpose16(v);
      const __mmask32 keep = first32(rows - r0);
      for (int32_t c = 0; c < std::min(16, cols - c0); ++c)
        _mm512_mask_storeu_epi16(dst + (c0 + c) * ldd + r0, keep, v[c]);
    }
}

}  // namespace avx512_bf16
}  // namespace sparsebert
