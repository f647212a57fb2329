#include "ops/packed_arrays.h"

#include <climits>
#include <stdexcept>
#include <string>

namespace sparsebert {
namespace {

void require(bool ok, const std::string& message) {
  if (!ok) throw std::invalid_argument(message);
}

void check_shape(const char* what, int32_t rows, int32_t cols) {
  require(rows > 0 && cols > 0, std::string(what) + ": shape must be positive, got [" + std::to_string(rows) +
                                    ", " + std::to_string(cols) + "]");
}

// ptr has rows + 1 monotone offsets from 0 to entries, and each row's indices are strictly increasing and below
// `limit`. Every offset is checked before any index is read through it.
void check_compressed(const char* what, int32_t rows, const CompressedRows& c, int64_t limit) {
  const std::string w = what;
  require(c.ptr_len == static_cast<int64_t>(rows) + 1,
          w + ": pointer array has " + std::to_string(c.ptr_len) + " entries, expected rows + 1 = " +
              std::to_string(static_cast<int64_t>(rows) + 1));
  require(c.entries >= 0 && c.entries <= INT32_MAX, w + ": entry count overflows the int32 pointers");
  require(c.ptr[0] == 0, w + ": pointer array must start at 0");
  require(c.ptr[rows] == c.entries, w + ": pointer array ends at " + std::to_string(c.ptr[rows]) +
                                        " but there are " + std::to_string(c.entries) + " entries");
  for (int32_t r = 0; r < rows; ++r)
    require(c.ptr[r] <= c.ptr[r + 1] && c.ptr[r + 1] <= c.entries,
            w + ": pointer array is not monotone within [0, entries] at row " + std::to_string(r));
  for (int32_t r = 0; r < rows; ++r) {
    const int32_t b = c.ptr[r], e = c.ptr[r + 1];
    for (int32_t j = b; j < e; ++j) {
      require(c.idx[j] < limit, w + ": index " + std::to_string(c.idx[j]) + " in row " + std::to_string(r) +
                                    " is out of range (limit " + std::to_string(limit) + ")");
      require(j == b || c.idx[j] > c.idx[j - 1],
              w + ": indices of row " + std::to_string(r) + " are not strictly increasing");
    }
  }
}

void check_sparse_cols(const char* what, int32_t cols) {
  require(cols <= kMaxSparseCols, std::string(what) + ": uint16 indices take at most " +
                                      std::to_string(kMaxSparseCols) + " input columns, got " + std::to_string(cols));
}

// The kernels read whole blocks, so lanes past K must add nothing: those weights belong to no input.
template <class T>
void check_block_tail(const char* what, int32_t cols, const CompressedRows& c, const T* values) {
  const int32_t tail = cols % 4, last_block = cols / 4;
  if (tail == 0) return;
  for (int64_t j = 0; j < c.entries; ++j)
    if (c.idx[j] == last_block)
      for (int32_t q = tail; q < 4; ++q)
        require(values[4 * j + q] == T(0), std::string(what) + ": block " + std::to_string(last_block) +
                                               " has a nonzero weight past the last input column");
}

}  // namespace

void check_dense(int32_t rows, int32_t cols) { check_shape("dense", rows, cols); }

void check_unstructured(int32_t rows, int32_t cols, const CompressedRows& c) {
  check_shape("unstructured", rows, cols);
  check_sparse_cols("unstructured", cols);
  check_compressed("unstructured", rows, c, cols);
}

void check_block4(int32_t rows, int32_t cols, const CompressedRows& c, const float* values) {
  check_shape("block4", rows, cols);
  check_sparse_cols("block4", cols);
  check_compressed("block4", rows, c, (cols + 3) / 4);
  check_block_tail("block4", cols, c, values);
}

void check_block4_int8(int32_t rows, int32_t cols, const CompressedRows& c, const int8_t* values,
                       const float* scales) {
  check_shape("block4_int8", rows, cols);
  require(cols <= kInt8MaxCols, "block4_int8: at most " + std::to_string(kInt8MaxCols) +
                                    " input columns (int32 sums stay exact), got " + std::to_string(cols));
  check_compressed("block4_int8", rows, c, (cols + 3) / 4);
  check_block_tail("block4_int8", cols, c, values);
  for (int32_t r = 0; r < rows; ++r)
    require(scales[r] >= 0.0f && scales[r] < 3.0e38f,
            "block4_int8: scale of row " + std::to_string(r) + " is not a finite value >= 0");
}

}  // namespace sparsebert
