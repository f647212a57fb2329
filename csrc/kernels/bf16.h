// bf16 kernels for attention (an opt-in trade of precision for speed: EncoderOptions::bf16_attention). Inputs are
// rounded from fp32 to bf16 (nearest even, denormals to zero, as the CPU's conversion does); products and sums are
// fp32. The fast table runs on AMX (Intel Xeon since Sapphire Rapids); the reference table is plain C++ for tests.
// (Without AMX, a vdpbf16ps product measured as fast as fp32 FMAs on Sapphire Rapids, so there is no such table.)
#pragma once

#include <cstdint>
#include <string>

namespace sparsebert {

// fp32 rows -> bf16 for a rows x cols block of src (row r at src + r * lds). Only the block is written.
//   rows:       dst[r * ldd + c] = src[r][c]
//   transposed: dst[c * ldd + r] = src[r][c]
//   pairs:      dst[(r / 2) * ldd + 2 * c + r % 2] = src[r][c] (the layout the right operand of a bf16 dot product
//               takes: each 32-bit word holds two consecutive rows of one column); with odd rows the last pair's
//               second half is 0.
using Bf16PackFn = void (*)(int32_t rows, int32_t cols, const float* src, int64_t lds, uint16_t* dst, int64_t ldd);

// C[i][j] = sum_k A[i][k] B[k][j] for i < m, j < n: A in bf16 rows (lda elements apart), B packed in pairs (pair
// p of rows at b + p * ldb), C fp32 rows (ldc floats apart). m and n are multiples of 16, k of 32.
using Bf16GemmFn = void (*)(int32_t m, int32_t n, int32_t k, const uint16_t* a, int64_t lda, const uint16_t* b,
                            int64_t ldb, float* c, int64_t ldc);

// The column softmax of kernels.h (SoftmaxColsFn: m rows, n columns, scale, the kept rows) in place on s, whose
// probabilities are then stored as bf16 pairs into dst (pair p of rows at dst + p * ldd; with odd m the last
// pair's second half is 0). s is left in an unspecified state. May touch up to round_up(n, 16) columns of s and
// dst.
using Bf16SoftmaxPairsFn = void (*)(int32_t m, int32_t n, float* s, int64_t lds, float scale, const uint8_t* keep,
                                    uint16_t* dst, int64_t ldd);

struct Bf16Kernels {
  const char* name;
  Bf16PackFn pack_rows, pack_transposed, pack_pairs;
  Bf16GemmFn gemm;
  Bf16SoftmaxPairsFn softmax_pairs;
};

// Plain C++, every CPU: the tests' reference (slow).
const Bf16Kernels& bf16_reference_kernels();

// The AMX table, or null with `why_not` saying what is missing: AMX-BF16 and AVX512-BF16 in the CPU, tile state
// enabled by the OS and granted to this process (Linux asks once per process).
const Bf16Kernels* bf16_fast_kernels(const char** why_not = nullptr);

// What an engine on ISA path `isa` may use: the fast table, on the avx512 path only (its packing is AVX-512 code,
// which a lesser path chosen by the caller promises not to run); else null, with `why_not` saying why.
const Bf16Kernels* bf16_kernels_for_isa(const std::string& isa, std::string* why_not);

// AVX512-BF16 code (the packers and the softmax), and AMX's tile product.
namespace avx512_bf16 {
void pack_rows(int32_t rows, int32_t cols, const float* src, int64_t lds, uint16_t* dst, int64_t ldd);
void pack_transposed(int32_t rows, int32_t cols, const float* src, int64_t lds, uint16_t* dst, int64_t ldd);
void pack_pairs(int32_t rows, int32_t cols, const float* src, int64_t lds, uint16_t* dst, int64_t ldd);
void softmax_pairs(int32_t m, int32_t n, float* s, int64_t lds, float scale, const uint8_t* keep, uint16_t* dst,
                   int64_t ldd);
}  // namespace avx512_bf16
namespace amx {
void gemm(int32_t m, int32_t n, int32_t k, const uint16_t* a, int64_t lda, const uint16_t* b, int64_t ldb, float* c,
          int64_t ldc);
}  // namespace amx

}  // namespace sparsebert
