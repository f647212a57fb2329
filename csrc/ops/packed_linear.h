// A linear layer y = act(W x + b) (+ residual) with W packed once, at load, into the layout its kernel streams:
// dense row-major, unstructured (CSR, uint16 column indices) or 4-block (uint16 block indices, 4 weights per
// block). Every constructor validates its arrays completely, so a kernel never sees an index out of range.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/aligned_buffer.h"
#include "common/tile_matrix.h"
#include "kernels/kernels.h"

namespace sparsebert {

class ThreadPool;

// Working buffers of a forward call that a caller running many calls in turn keeps, so that they are not allocated
// (and their pages faulted in) at every call: the int8 layouts' quantized input.
struct LinearScratch {
  AlignedBuffer<uint8_t> xq;
  AlignedBuffer<float> x_scale;
  AlignedBuffer<int32_t> x_zero;
};

enum class Layout { kDense, kUnstructured, kBlock4, kBlock4Int8 };
const char* layout_name(Layout layout);

// Tuning of the sparse float layouts (unstructured, block4); the defaults choose from the matrix's shape and
// density. Overrides are for tuning and for tests that must cross many K-blocks and row groups.
struct PackOptions {
  int32_t kblock_cols = 0;    // input columns per K-block; 0: chosen
  int32_t group_panels = -1;  // panels of kPanelRows rows per row group; 0: one group; -1: chosen
};

class PackedLinear {
 public:
  // weight: [rows][cols] row-major. bias: rows values or null (zero bias).
  static std::shared_ptr<PackedLinear> dense(int32_t rows, int32_t cols, const float* weight, const float* bias);
  // row_ptr: rows + 1 offsets into col_idx/values (nnz entries); col_idx strictly increasing per row, < cols.
  static std::shared_ptr<PackedLinear> unstructured(int32_t rows, int32_t cols, const int32_t* row_ptr,
                                                    int64_t row_ptr_len, const uint16_t* col_idx,
                                                    const float* values, int64_t nnz, const float* bias,
                                                    const PackOptions& options = {});
  // block_ptr: rows + 1 offsets into block_col (nb entries) and values (nb * 4); block_col strictly increasing
  // per row, < ceil(cols / 4).
  static std::shared_ptr<PackedLinear> block4(int32_t rows, int32_t cols, const int32_t* block_ptr,
                                              int64_t block_ptr_len, const uint16_t* block_col,
                                              const float* values, int64_t nb, const float* bias,
                                              const PackOptions& options = {});
  // As block4, with s8 weights (values: nb * 4) and one scale per row: row r's weights are scales[r] * values.
  // Run with u8 activations quantized per token (kernels.h, "int8"). cols is at most kInt8MaxCols
  // (ops/packed_arrays.h, which checks every constructor's arrays).
  static std::shared_ptr<PackedLinear> block4_int8(int32_t rows, int32_t cols, const int32_t* block_ptr,
                                                   int64_t block_ptr_len, const uint16_t* block_col,
                                                   const int8_t* values, int64_t nb, const float* scales,
                                                   const float* bias);

  Layout layout() const { return layout_; }
  int32_t rows() const { return rows_; }
  int32_t cols() const { return cols_; }
  int64_t stored_weights() const { return stored_; }  // dense: rows*cols; unstructured: nnz; block4: 4*blocks
  int64_t nbytes() const;

  // y = act(W x + b) (+ residual) for every token of x, split over the pool. y is resized to rows() x tokens;
  // residual, when given, must be rows() x tokens too.
  void forward(const KernelTable& kernels, ThreadPool& pool, const TileMatrix& x, TileMatrix& y,
               Activation act = Activation::kNone, const TileMatrix* residual = nullptr,
               LinearScratch* scratch = nullptr) const;
  // The same on views: y (and residual) must already have rows() features and x's tokens.
  void forward(const KernelTable& kernels, ThreadPool& pool, const TileView& x, const TileView& y,
               Activation act = Activation::kNone, const TileView* residual = nullptr,
               LinearScratch* scratch = nullptr) const;

  // The pieces of a sparse forward over one token tile (n <= kTileTokens tokens, rows kTileTokens floats apart),
  // for ops that interleave two layers (ops/fused_ffn.h). Sparse layouts only.
  static constexpr int32_t kGroupRows = 128;  // rows per row group of a matrix much taller than wide
  static constexpr int32_t kPanelRows = 32;   // rows per panel: the unit of re-sorting and of work sharing
  static constexpr int32_t kInt8GroupTiles = 8;  // int8: input tiles quantized at a time (at least 2 per thread)
  bool sparse() const { return layout_ == Layout::kUnstructured || layout_ == Layout::kBlock4; }
  int32_t kblock_cols() const { return kblock_cols_; }
  int32_t kblocks() const { return kblocks_; }
  int32_t group_rows() const { return group_rows_; }
  int32_t groups() const { return static_cast<int32_t>(group_pairs_.size()) - 1; }
  // Rows of group g (from row g * group_rows()), every K-block, bias and activation applied, into y_group
  // (the group's first row first).
  void run_group(const KernelTable& kernels, int32_t g, const float* x, float* y_group, int32_t n,
                 Activation act) const;
  // K-block b of every row: x_block holds the block's input columns (from its first), y the whole output tile.
  // Block 0 starts from bias + residual (residual may be null), later blocks add to y. No activation.
  void run_kblock(const KernelTable& kernels, int32_t b, const float* x_block, float* y, int32_t n,
                  const float* residual) const;

 private:
  PackedLinear(Layout layout, int32_t rows, int32_t cols) : layout_(layout), rows_(rows), cols_(cols) {}
  void set_bias(const float* bias);
  // Builds the paired, K-blocked layout of the sparse kernels from validated compressed rows (see below).
  void pack_pairs(const int32_t* ptr, const uint16_t* idx, const float* values, int width,
                  const PackOptions& options);
  // Pair boundaries of `chunks` pieces of about equal work, cut at panel boundaries.
  std::vector<int32_t> split_pairs(int chunks) const;
  // Dense rows [r0, r1) of one tile.
  void run_dense_rows(const KernelTable& kernels, int32_t r0, int32_t r1, const float* x, float* y, int32_t n,
                      const Epilogue& ep) const;
  // Sparse pairs [p0, p1) of one tile, every K-block.
  void run_sparse_pairs(const KernelTable& kernels, int32_t p0, int32_t p1, const float* x, float* y, int32_t n,
                        const Epilogue& ep) const;
  // Pairs [q0, q1) of one row group, every K-block: y_group, ep.bias and ep.residual start at the group's first
  // row.
  void run_group_pairs(const KernelTable& kernels, int32_t q0, int32_t q1, const float* x, float* y_group,
                       int32_t n, const Epilogue& ep) const;
  PairedView kblock_view(int32_t b) const;
  // The int8 forward (packed_linear_run_int8.cc): quantize each input tile once, then rows in parallel.
  void forward_int8(const KernelTable& kernels, ThreadPool& pool, const TileView& x, const TileView& y,
                    Activation act, const TileView* residual, LinearScratch* scratch) const;
  // Row bounds of `chunks` pieces of about equal entries (int8 layout, row pointers `ptr`).
  std::vector<int32_t> split_int8_rows(const int32_t* ptr, int chunks) const;
  // The int8 weights as the kernels of `kernels` take them: as stored, or split into blocks with bounded byte
  // pairs (kernels.h, int8_bounded_pairs), built on first use so that CPUs with VNNI never pay for them.
  Int8View int8_view(const KernelTable& kernels) const;
  const float* kblock_input(const float* x, int32_t b) const;  // block b's first input row within a tile

  Layout layout_;
  int32_t rows_, cols_;
  int64_t stored_ = 0;              // weights stored by the caller's arrays (no packing padding)
  AlignedBuffer<float> bias_;
  AlignedBuffer<float> dense_;      // kDense: [rows][cols]

  // Sparse layouts (kernels/kernels.h, PairedView). Rows are cut into row groups of group_rows_ consecutive
  // rows (one group unless the matrix is much taller than wide), and within each group sorted by length and cut
  // into panels of kPanelRows; the columns are cut into K-blocks of kblock_cols_, so that one block's activation panel
  // (kblock_cols_ x kTileTokens floats) stays in L1 while the rows' entries in that block stream past, the
  // kernel running once per K-block and carrying partial sums in y. Within each (K-block, panel) the rows are
  // re-sorted by their length in that block and paired, so a pair's two rows need little padding. Every
  // K-block has the same number of pairs per panel, so a range of panels is the same set of output rows in
  // every block and threads can own panel ranges.
  int32_t kblock_cols_ = 0;
  int32_t kblocks_ = 1;
  int32_t group_rows_ = 0;           // rows per row group (rows_: one group)
  int32_t pairs_ = 0;               // pairs per K-block
  AlignedBuffer<int32_t> pair_ptr_;  // kblocks_ x (pairs_ + 1) absolute entry offsets
  AlignedBuffer<int32_t> pair_rows_; // kblocks_ x pairs_ x 2 output rows from the group's first (-1: none)
  AlignedBuffer<uint16_t> idx_;      // 2 per entry, counted from the K-block's first column (or 4-block)
  AlignedBuffer<float> values_;      // 2 x width per entry
  std::vector<int32_t> panel_pairs_;  // panels + 1: first pair of each panel
  std::vector<int32_t> group_pairs_;  // groups + 1: first pair of each row group
  std::vector<int64_t> panel_work_;   // panels + 1: prefix sums of entries per panel over all K-blocks

  // kBlock4Int8 (kernels.h, Int8View): rows in their own order, blocks as given.
  AlignedBuffer<int32_t> i8_ptr_;    // rows + 1
  AlignedBuffer<uint16_t> i8_col_;   // one block index per block
  AlignedBuffer<int32_t> i8_val_;    // the 4 s8 weights of a block in one word
  AlignedBuffer<float> w_scale_;     // per row
  AlignedBuffer<int32_t> w_sum_;     // per row: sum of its s8 weights
  AlignedBuffer<int32_t> row_ids_;   // 0 .. rows - 1, for finish_rows
  // The same weights with bounded byte pairs, for the AVX2 kernel (int8_view).
  mutable std::once_flag bounded_once_;
  mutable AlignedBuffer<int32_t> bounded_ptr_;
  mutable AlignedBuffer<uint16_t> bounded_col_;
  mutable AlignedBuffer<int32_t> bounded_val_;
};

}  // namespace sparsebert
