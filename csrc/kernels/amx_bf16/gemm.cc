// The bf16 GEMM on AMX (kernels/bf16.h): C = A B in 16 x 16 fp32 tiles, up to 2 x 2 of them per pass (4 sums
// tiles, 2 of A, 2 of B: the 8 tile registers), k in steps of 32.
#include <immintrin.h>

#include <cstring>

#include "kernels/bf16.h"

namespace sparsebert {
namespace amx {
namespace {

// The tile configuration ldtilecfg reads (palette 1): every tile 16 rows of 64 bytes.
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t bytes_per_row[16] = {};
  uint8_t rows[16] = {};
};

TileConfig all_full_tiles() {
  TileConfig config;
  for (int t = 0; t < 8; ++t) {
    config.bytes_per_row[t] = 64;
    config.rows[t] = 16;
  }
  return config;
}

// Sums tiles 0 .. 3 (row block i, column block j at 2 i + j), A tiles 4 and 5, B tiles 6 and 7. Tile numbers are
// instruction immediates, hence the template.
template <int kRowBlocks, int kColBlocks>
void block(int32_t k, const uint16_t* a, int64_t lda, const uint16_t* b, int64_t ldb, float* c, int64_t ldc) {
  const int64_t a_bytes = lda * 2, b_bytes = ldb * 2, c_bytes = ldc * 4;
  _tile_zero(0);
  if constexpr (kColBlocks == 2) _tile_zero(1);
  if constexpr (kRowBlocks == 2) _tile_zero(2);
  if constexpr (kRowBlocks == 2 && kColBlocks == 2) _tile_zero(3);
  for (int32_t p = 0; p < k; p += 32) {
    _tile_loadd(4, a + p, a_bytes);
    _tile_loadd(6, b + (p / 2) * ldb, b_bytes);
    if constexpr (kColBlocks == 2) _tile_loadd(7, b + (p / 2) * ldb + 32, b_bytes);
    _tile_dpbf16ps(0, 4, 6);
    if constexpr (kColBlocks == 2) _tile_dpbf16ps(1, 4, 7);
    if constexpr (kRowBlocks == 2) {
      _tile_loadd(5, a + 16 * lda + p, a_bytes);
      _tile_dpbf16ps(2, 5, 6);
      if constexpr (kColBlocks == 2) _tile_dpbf16ps(3, 5, 7);
    }
  }
  _tile_stored(0, c, c_bytes);
  if constexpr (kColBlocks == 2) _tile_stored(1, c + 16, c_bytes);
  if constexpr (kRowBlocks == 2) _tile_stored(2, c + 16 * ldc, c_bytes);
  if constexpr (kRowBlocks == 2 && kColBlocks == 2) _tile_stored(3, c + 16 * ldc + 16, c_bytes);
}

template <int kRowBlocks>
void row_block(int32_t n, int32_t k, const uint16_t* a, int64_t lda, const uint16_t* b, int64_t ldb, float* c,
               int64_t ldc) {
  int32_t j = 0;
  for (; j + 32 <= n; j += 32) block<kRowBlocks, 2>(k, a, lda, b + 2 * j, ldb, c + j, ldc);
  if (j < n) block<kRowBlocks, 1>(k, a, lda, b + 2 * j, ldb, c + j, ldc);
}

}  // namespace

// The tile configuration is loaded on every call and released at its end: other code in this thread (a library
// using AMX, say) may configure the tiles otherwise between two calls, and released tiles cost a context switch
// nothing.
void gemm(int32_t m, int32_t n, int32_t k, const uint16_t* a, int64_t lda, const uint16_t* b, int64_t ldb, float* c,
          int64_t ldc) {
  static const TileConfig config = all_full_tiles();
  _tile_loadconfig(&config);
  int32_t i = 0;
  for (; i + 32 <= m; i += 32) row_block<2>(n, k, a + i * lda, lda, b, ldb, c + i * ldc, ldc);
  if (i < m) row_block<1>(n, k, a + i * lda, lda, b, ldb, c + i * ldc, ldc);
  _tile_release();
}

}  // namespace amx
}  // namespace sparsebert
