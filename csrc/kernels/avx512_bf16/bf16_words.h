// fp32 -> bf16 pairs in AVX-512 registers, shared by the packers and the softmax of this folder (compiled with its
// flags only).
#pragma once

#include <immintrin.h>

namespace sparsebert {
namespace avx512_bf16 {

// 16 columns of two rows as 16 32-bit words: word c holds lo[c] in its low half and hi[c] in its high half, each
// rounded to bf16 (nearest even).
inline __m512i bf16_pair_words(__m512 lo, __m512 hi) {
  // cvtne2ps gives lo's 16 values, then hi's: interleave them.
  const __m512i both = reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(hi, lo));
  const __m512i order = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6,
                                         21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  return _mm512_permutexvar_epi16(order, both);
}

}  // namespace avx512_bf16
}  // namespace sparsebert
