#include "ops/packed_linear.h"

#include <algorithm>
#include <numeric>
#include <stdexcept>
#include <string>

#include "encoder/thread_pool.h"

namespace sparsebert {
namespace {

void require(bool ok, const std::string& message) {
  if (!ok) throw std::invalid_argument(message);
}

void check_shape(int32_t rows, int32_t cols) {
  require(rows > 0 && cols > 0, "PackedLinear: shape must be positive, got [" + std::to_string(rows) + ", " +
                                    std::to_string(cols) + "]");
}

// Validates a compressed-row structure: ptr has rows + 1 monotone offsets from 0 to entries, and each row's
// indices are strictly increasing and below `limit`.
void check_compressed(const char* what, int32_t rows, const int32_t* ptr, int64_t ptr_len, const uint16_t* idx,
                      int64_t entries, int64_t limit) {
  const std::string w = what;
  require(ptr_len == static_cast<int64_t>(rows) + 1,
          w + ": pointer array has " + std::to_string(ptr_len) + " entries, expected rows + 1 = " +
              std::to_string(static_cast<int64_t>(rows) + 1));
  require(entries >= 0 && entries <= INT32_MAX, w + ": entry count out of range");
  require(ptr[0] == 0, w + ": pointer array must start at 0");
  require(ptr[rows] == entries, w + ": pointer array ends at " + std::to_string(ptr[rows]) + " but there are " +
                                    std::to_string(entries) + " entries");
  // Every offset is checked before any index is read through it.
  for (int32_t r = 0; r < rows; ++r)
    require(ptr[r] <= ptr[r + 1] && ptr[r + 1] <= entries,
            w + ": pointer array is not monotone within [0, entries] at row " + std::to_string(r));
  for (int32_t r = 0; r < rows; ++r) {
    const int32_t b = ptr[r], e = ptr[r + 1];
    for (int32_t j = b; j < e; ++j) {
      require(idx[j] < limit, w + ": index " + std::to_string(idx[j]) + " in row " + std::to_string(r) +
                                  " is out of range (limit " + std::to_string(limit) + ")");
      require(j == b || idx[j] > idx[j - 1],
              w + ": indices of row " + std::to_string(r) + " are not strictly increasing");
    }
  }
}

}  // namespace

const char* layout_name(Layout layout) {
  switch (layout) {
    case Layout::kDense: return "dense";
    case Layout::kUnstructured: return "unstructured";
    case Layout::kBlock4: return "block4";
  }
  return "?";
}

std::shared_ptr<PackedLinear> PackedLinear::dense(int32_t rows, int32_t cols, const float* weight,
                                                  const float* bias) {
  check_shape(rows, cols);
  std::shared_ptr<PackedLinear> p(new PackedLinear(Layout::kDense, rows, cols));
  p->dense_.assign(weight, static_cast<std::size_t>(rows) * cols);
  p->set_bias(bias);
  return p;
}

std::shared_ptr<PackedLinear> PackedLinear::unstructured(int32_t rows, int32_t cols, const int32_t* row_ptr,
                                                         int64_t row_ptr_len, const uint16_t* col_idx,
                                                         const float* values, int64_t nnz, const float* bias) {
  check_shape(rows, cols);
  check_compressed("unstructured PackedLinear", rows, row_ptr, row_ptr_len, col_idx, nnz, cols);
  std::shared_ptr<PackedLinear> p(new PackedLinear(Layout::kUnstructured, rows, cols));
  p->pack_sorted_rows(row_ptr, col_idx, values, 1);
  p->set_bias(bias);
  return p;
}

std::shared_ptr<PackedLinear> PackedLinear::block4(int32_t rows, int32_t cols, const int32_t* block_ptr,
                                                   int64_t block_ptr_len, const uint16_t* block_col,
                                                   const float* values, int64_t nb, const float* bias) {
  check_shape(rows, cols);
  check_compressed("block4 PackedLinear", rows, block_ptr, block_ptr_len, block_col, nb, (cols + 3) / 4);
  // A block that runs past K must hold zeros there: those weights belong to no input.
  const int32_t tail = cols % 4, last_block = cols / 4;
  if (tail != 0)
    for (int64_t j = 0; j < nb; ++j)
      if (block_col[j] == last_block)
        for (int32_t q = tail; q < 4; ++q)
          require(values[4 * j + q] == 0.0f, "block4 PackedLinear: block " + std::to_string(last_block) +
                                                 " has a nonzero weight past the last input column");
  std::shared_ptr<PackedLinear> p(new PackedLinear(Layout::kBlock4, rows, cols));
  p->pack_sorted_rows(block_ptr, block_col, values, 4);
  p->set_bias(bias);
  return p;
}

void PackedLinear::set_bias(const float* bias) {
  bias_.reset(rows_);
  if (bias) std::copy(bias, bias + rows_, bias_.data());
}

void PackedLinear::pack_sorted_rows(const int32_t* ptr, const uint16_t* idx, const float* values,
                                    int entry_width) {
  std::vector<int32_t> order(rows_);
  std::iota(order.begin(), order.end(), 0);
  // Longest rows first, ties in row order: the kernel pairs neighbours, so similar lengths waste nothing.
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return ptr[a + 1] - ptr[a] > ptr[b + 1] - ptr[b];
  });
  const int64_t entries = ptr[rows_];
  ptr_.reset(rows_ + 1);
  idx_.reset(entries);
  values_.reset(entries * entry_width);
  out_row_.reset(rows_);
  int32_t at = 0;
  for (int32_t i = 0; i < rows_; ++i) {
    const int32_t r = order[i], b = ptr[r], len = ptr[r + 1] - ptr[r];
    ptr_[i] = at;
    out_row_[i] = r;
    std::copy(idx + b, idx + b + len, idx_.data() + at);
    std::copy(values + static_cast<int64_t>(b) * entry_width, values + static_cast<int64_t>(b + len) * entry_width,
              values_.data() + static_cast<int64_t>(at) * entry_width);
    at += len;
  }
  ptr_[rows_] = at;
}

int64_t PackedLinear::stored_weights() const {
  switch (layout_) {
    case Layout::kDense: return static_cast<int64_t>(rows_) * cols_;
    case Layout::kUnstructured: return static_cast<int64_t>(idx_.size());
    case Layout::kBlock4: return 4 * static_cast<int64_t>(idx_.size());
  }
  return 0;
}

int64_t PackedLinear::nbytes() const {
  return static_cast<int64_t>(bias_.nbytes() + dense_.nbytes() + ptr_.nbytes() + idx_.nbytes() +
                              values_.nbytes() + out_row_.nbytes());
}

std::vector<int32_t> PackedLinear::split_rows(int chunks) const {
  std::vector<int32_t> bounds(chunks + 1, rows_);
  bounds[0] = 0;
  if (layout_ == Layout::kDense) {
    for (int c = 1; c < chunks; ++c) bounds[c] = static_cast<int32_t>(static_cast<int64_t>(rows_) * c / chunks);
    return bounds;
  }
  // Equal numbers of entries (the work), not of rows: stored rows are sorted by length. The row count of each
  // piece is rounded to even so the kernel's row pairs are not broken up.
  const int64_t total = ptr_[rows_];
  for (int c = 1; c < chunks; ++c) {
    const int64_t target = total * c / chunks;
    const int32_t* it = std::lower_bound(ptr_.data(), ptr_.data() + rows_ + 1, static_cast<int32_t>(target));
    int32_t r = static_cast<int32_t>(it - ptr_.data());
    r -= r & 1;
    bounds[c] = std::max(bounds[c - 1], std::min(r, rows_));
  }
  return bounds;
}

void PackedLinear::run_rows(const KernelTable& kernels, int32_t r0, int32_t r1, const float* x, float* y,
                            int32_t n, const Epilogue& ep) const {
  if (r0 >= r1) return;
  switch (layout_) {
    case Layout::kDense: {
      Epilogue shifted = ep;
      shifted.bias = ep.bias + r0;
      if (ep.residual) shifted.residual = ep.residual + static_cast<int64_t>(r0) * ep.ldr;
      kernels.gemm(r1 - r0, n, cols_, dense_.data() + static_cast<int64_t>(r0) * cols_, cols_, x, kTileTokens,
                   y + static_cast<int64_t>(r0) * kTileTokens, kTileTokens, shifted);
      break;
    }
    case Layout::kUnstructured:
      kernels.spmm_csr(CsrView{ptr_.data(), idx_.data(), values_.data(), out_row_.data()}, r0, r1, x, kTileTokens,
                       y, kTileTokens, n, ep);
      break;
    case Layout::kBlock4:
      kernels.spmm_block4(Block4View{ptr_.data(), idx_.data(), values_.data(), out_row_.data()}, r0, r1, x,
                          kTileTokens, y, kTileTokens, n, ep);
      break;
  }
}

void PackedLinear::forward(const KernelTable& kernels, ThreadPool& pool, const TileMatrix& x, TileMatrix& y,
                           Activation act, const TileMatrix* residual) const {
  if (x.features() != cols_)
    throw std::invalid_argument("PackedLinear: input has " + std::to_string(x.features()) + " features, expected " +
                                std::to_string(cols_));
  y.resize(rows_, x.tokens());
  if (residual && (residual->features() != rows_ || residual->tokens() != x.tokens()))
    throw std::invalid_argument("PackedLinear: residual shape does not match the output");
  const int32_t tiles = x.num_tiles();
  // Whole tiles per task when they divide evenly among the threads (no shared panel, no imbalance); otherwise
  // each tile is also cut into row pieces so the dynamic schedule can even out the load.
  const int threads = pool.size();
  int chunks = 1;
  if (threads > 1 && tiles % threads != 0) chunks = std::max(1, (4 * threads + tiles - 1) / tiles);
  chunks = std::min<int>(chunks, std::max(1, rows_ / 16));
  const std::vector<int32_t> bounds = split_rows(chunks);
  pool.parallel_for(tiles * chunks, [&](int task, int) {
    const int32_t tile = task / chunks, chunk = task % chunks;
    Epilogue ep;
    ep.bias = bias_.data();
    ep.act = act;
    if (residual) {
      ep.residual = residual->tile(tile);
      ep.ldr = kTileTokens;
    }
    run_rows(kernels, bounds[chunk], bounds[chunk + 1], x.tile(tile), y.tile(tile), x.tokens_in_tile(tile), ep);
  });
}

}  // namespace sparsebert
