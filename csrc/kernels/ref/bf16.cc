// The bf16 reference kernels (kernels/bf16.h): one value at a time, in the order the contract states.
#include <cmath>
#include <cstring>

#include "kernels/bf16.h"
#include "kernels/ref/kernels_ref.h"

namespace sparsebert {
namespace {

// Round to nearest even on the bit pattern; denormals become signed zeros and NaNs stay (quiet) NaNs, as
// vcvtne2ps2bf16 does.
uint16_t to_bf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  if (std::isnan(x)) return static_cast<uint16_t>((u >> 16) | 0x40);
  if (std::fpclassify(x) == FP_SUBNORMAL) return static_cast<uint16_t>((u >> 16) & 0x8000);
  u += 0x7fff + ((u >> 16) & 1);
  return static_cast<uint16_t>(u >> 16);
}

float from_bf16(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float x;
  std::memcpy(&x, &u, sizeof x);
  return std::fpclassify(x) == FP_SUBNORMAL ? std::copysign(0.0f, x) : x;
}

void pack_rows(int32_t rows, int32_t cols, const float* src, int64_t lds, uint16_t* dst, int64_t ldd) {
  for (int32_t r = 0; r < rows; ++r)
    for (int32_t c = 0; c < cols; ++c) dst[r * ldd + c] = to_bf16(src[r * lds + c]);
}

void pack_transposed(int32_t rows, int32_t cols, const float* src, int64_t lds, uint16_t* dst, int64_t ldd) {
  for (int32_t r = 0; r < rows; ++r)
    for (int32_t c = 0; c < cols; ++c) dst[c * ldd + r] = to_bf16(src[r * lds + c]);
}

void pack_pairs(int32_t rows, int32_t cols, const float* src, int64_t lds, uint16_t* dst, int64_t ldd) {
  for (int32_t r = 0; r < (rows + 1) / 2 * 2; ++r)
    for (int32_t c = 0; c < cols; ++c)
      dst[(r / 2) * ldd + 2 * c + r % 2] = r < rows ? to_bf16(src[r * lds + c]) : 0;
}

void gemm(int32_t m, int32_t n, int32_t k, const uint16_t* a, int64_t lda, const uint16_t* b, int64_t ldb, float* c,
          int64_t ldc) {
  for (int32_t i = 0; i < m; ++i)
    for (int32_t j = 0; j < n; ++j) {
      float sum = 0.0f;
      for (int32_t p = 0; p < k; ++p) sum += from_bf16(a[i * lda + p]) * from_bf16(b[(p / 2) * ldb + 2 * j + p % 2]);
      c[i * ldc + j] = sum;
    }
}

void softmax_pairs(int32_t m, int32_t n, float* s, int64_t lds, float scale, const uint8_t* keep, uint16_t* dst,
                   int64_t ldd) {
  ref::softmax_cols(m, n, s, lds, scale, keep);
  pack_pairs(m, n, s, lds, dst, ldd);
}

}  // namespace

const Bf16Kernels& bf16_reference_kernels() {
  static const Bf16Kernels table{"reference", pack_rows, pack_transposed, pack_pairs, gemm, softmax_pairs};
  return table;
}

}  // namespace sparsebert
