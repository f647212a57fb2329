// A linear layer y = act(W x + b) (+ residual) with W packed once, at load, into the layout its kernel streams:
// dense row-major, unstructured (CSR, uint16 column indices) or 4-block (uint16 block indices, 4 weights per
// block). Every constructor validates its arrays completely, so a kernel never sees an index out of range.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/aligned_buffer.h"
#include "common/tile_matrix.h"
#include "kernels/kernels.h"

namespace sparsebert {

class ThreadPool;

enum class Layout { kDense, kUnstructured, kBlock4 };
const char* layout_name(Layout layout);

class PackedLinear {
 public:
  // weight: [rows][cols] row-major. bias: rows values or null (zero bias).
  static std::shared_ptr<PackedLinear> dense(int32_t rows, int32_t cols, const float* weight, const float* bias);
  // row_ptr: rows + 1 offsets into col_idx/values (nnz entries); col_idx strictly increasing per row, < cols.
  static std::shared_ptr<PackedLinear> unstructured(int32_t rows, int32_t cols, const int32_t* row_ptr,
                                                    int64_t row_ptr_len, const uint16_t* col_idx,
                                                    const float* values, int64_t nnz, const float* bias);
  // block_ptr: rows + 1 offsets into block_col (nb entries) and values (nb * 4); block_col strictly increasing
  // per row, < ceil(cols / 4).
  static std::shared_ptr<PackedLinear> block4(int32_t rows, int32_t cols, const int32_t* block_ptr,
                                              int64_t block_ptr_len, const uint16_t* block_col,
                                              const float* values, int64_t nb, const float* bias);

  Layout layout() const { return layout_; }
  int32_t rows() const { return rows_; }
  int32_t cols() const { return cols_; }
  int64_t stored_weights() const;  // dense: rows*cols; unstructured: nnz; block4: 4 * blocks
  int64_t nbytes() const;          // memory held by the packed weights and bias

  // y = act(W x + b) (+ residual) for every token of x, split over the pool. y is resized to rows() x tokens;
  // residual, when given, must be rows() x tokens too.
  void forward(const KernelTable& kernels, ThreadPool& pool, const TileMatrix& x, TileMatrix& y,
               Activation act = Activation::kNone, const TileMatrix* residual = nullptr) const;

 private:
  PackedLinear(Layout layout, int32_t rows, int32_t cols) : layout_(layout), rows_(rows), cols_(cols) {}
  void set_bias(const float* bias);
  // Reorders rows by descending length (see kernels/simd/spmm.inl) and fills ptr_/idx_/values_/out_row_.
  void pack_sorted_rows(const int32_t* ptr, const uint16_t* idx, const float* values, int entry_width);
  // Stored-row boundaries of `chunks` pieces with about equal work each.
  std::vector<int32_t> split_rows(int chunks) const;
  // Stored rows [r0, r1) of one tile.
  void run_rows(const KernelTable& kernels, int32_t r0, int32_t r1, const float* x, float* y, int32_t n,
                const Epilogue& ep) const;

  Layout layout_;
  int32_t rows_, cols_;
  AlignedBuffer<float> bias_;
  AlignedBuffer<float> dense_;      // kDense: [rows][cols]
  AlignedBuffer<int32_t> ptr_;      // sparse: rows + 1 entry offsets, in stored-row order
  AlignedBuffer<uint16_t> idx_;     // sparse: column (unstructured) or block index (block4)
  AlignedBuffer<float> values_;     // sparse: 1 or 4 weights per entry
  AlignedBuffer<int32_t> out_row_;  // sparse: stored row -> row of y
};

}  // namespace sparsebert
