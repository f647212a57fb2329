// The invariants of a packed linear's arrays as a file stores them (python/sparsebert/format/layouts.py lists
// the arrays): checked here once, by the PackedLinear constructors and, through _core.check_packed_arrays, by
// the file reader and writer, so that no kernel ever sees an index out of range. std::invalid_argument names
// the first violation.
#pragma once

#include <cstdint>

namespace sparsebert {

constexpr int32_t kMaxSparseCols = 65535;  // sparse layouts store uint16 indices
constexpr int32_t kInt8MaxCols = 32768;    // keeps the int8 kernels' int32 sums exact (255 * 128 * K < 2^31)

// Compressed rows: row r owns entries ptr[r] .. ptr[r + 1] of idx (a column, or a 4-block covering inputs
// 4 idx .. 4 idx + 3), strictly increasing within the row.
struct CompressedRows {
  const int32_t* ptr = nullptr;
  int64_t ptr_len = 0;
  const uint16_t* idx = nullptr;
  int64_t entries = 0;
};

void check_dense(int32_t rows, int32_t cols);
void check_unstructured(int32_t rows, int32_t cols, const CompressedRows& c);
// values: 4 per block; a block that runs past K holds zeros there.
void check_block4(int32_t rows, int32_t cols, const CompressedRows& c, const float* values);
// As block4 with s8 values and one finite scale >= 0 per row; K at most kInt8MaxCols.
void check_block4_int8(int32_t rows, int32_t cols, const CompressedRows& c, const int8_t* values,
                       const float* scales);

}  // namespace sparsebert
