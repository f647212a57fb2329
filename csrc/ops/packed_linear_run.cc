// Running a PackedLinear: work split over the pool's threads and the kernel calls over tiles, K-blocks and row
// groups (see packed_linear.h).
#include <algorithm>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/thread_pool.h"
#include "ops/packed_linear.h"

namespace sparsebert {

std::vector<int32_t> PackedLinear::split_pairs(int chunks) const {
  // Equal work (entries over all K-blocks), cut at panel boundaries.
  const int32_t panels = static_cast<int32_t>(panel_pairs_.size()) - 1;
  std::vector<int32_t> bounds(chunks + 1, pairs_);
  bounds[0] = 0;
  const int64_t total = panel_work_[panels];
  for (int c = 1; c < chunks; ++c) {
    const int64_t target = total * c / chunks;
    const auto it = std::lower_bound(panel_work_.begin(), panel_work_.end(), target);
    const int32_t g = static_cast<int32_t>(std::min<std::ptrdiff_t>(it - panel_work_.begin(), panels));
    bounds[c] = std::max(bounds[c - 1], panel_pairs_[g]);
  }
  return bounds;
}

void PackedLinear::run_dense_rows(const KernelTable& kernels, int32_t r0, int32_t r1, const float* x, float* y,
                                  int32_t n, const Epilogue& ep) const {
  if (r0 >= r1) return;
  Epilogue shifted = ep;
  shifted.bias = ep.bias + r0;
  if (ep.residual) shifted.residual = ep.residual + static_cast<int64_t>(r0) * ep.ldr;
  kernels.gemm(r1 - r0, n, cols_, dense_.data() + static_cast<int64_t>(r0) * cols_, cols_, x, kTileTokens,
               y + static_cast<int64_t>(r0) * kTileTokens, kTileTokens, shifted);
}

PairedView PackedLinear::kblock_view(int32_t b) const {
  return PairedView{pair_ptr_.data() + static_cast<std::size_t>(b) * (pairs_ + 1),
                    pair_rows_.data() + static_cast<std::size_t>(b) * pairs_ * 2, idx_.data(), values_.data()};
}

const float* PackedLinear::kblock_input(const float* x, int32_t b) const {
  return x + static_cast<int64_t>(b) * kblock_cols_ * kTileTokens;
}

void PackedLinear::run_group_pairs(const KernelTable& kernels, int32_t q0, int32_t q1, const float* x,
                                   float* y_group, int32_t n, const Epilogue& ep) const {
  const SpmmFn spmm = layout_ == Layout::kUnstructured ? kernels.spmm_csr : kernels.spmm_block4;
  const bool has_act = ep.act != Activation::kNone;
  // The first K-block starts from the bias (and the residual, unless an activation must come between them).
  Epilogue step;
  step.bias = ep.bias;
  if (!has_act) {
    step.residual = ep.residual;
    step.ldr = ep.ldr;
  }
  for (int32_t b = 0; b < kblocks_; ++b) {
    step.accumulate = b > 0;
    spmm(kblock_view(b), q0, q1, kblock_input(x, b), kTileTokens, y_group, kTileTokens, n, step);
  }
  if (!has_act) return;
  // Activation, then residual, over the rows these pairs wrote (any block's pairing lists the same rows).
  Epilogue rest = ep;
  rest.bias = nullptr;
  kernels.finish_rows(pair_rows_.data() + 2 * static_cast<std::size_t>(q0), 2 * (q1 - q0), y_group, kTileTokens,
                      n, rest);
}

void PackedLinear::run_sparse_pairs(const KernelTable& kernels, int32_t p0, int32_t p1, const float* x, float* y,
                                    int32_t n, const Epilogue& ep) const {
  // Row groups in turn (see choose_group_rows), each with its rows counted from its first.
  for (int32_t g = 0; g < groups(); ++g) {
    const int32_t q0 = std::max(p0, group_pairs_[g]), q1 = std::min(p1, group_pairs_[g + 1]);
    if (q0 >= q1) continue;
    const int64_t base = static_cast<int64_t>(g) * group_rows_;
    Epilogue eg = ep;
    eg.bias = ep.bias + base;
    if (ep.residual) eg.residual = ep.residual + base * ep.ldr;
    run_group_pairs(kernels, q0, q1, x, y + base * kTileTokens, n, eg);
  }
}

void PackedLinear::run_group(const KernelTable& kernels, int32_t g, const float* x, float* y_group, int32_t n,
                             Activation act) const {
  Epilogue ep;
  ep.bias = bias_.data() + static_cast<int64_t>(g) * group_rows_;
  ep.act = act;
  run_group_pairs(kernels, group_pairs_[g], group_pairs_[g + 1], x, y_group, n, ep);
}

void PackedLinear::run_kblock(const KernelTable& kernels, int32_t b, const float* x_block, float* y, int32_t n,
                              const float* residual) const {
  const SpmmFn spmm = layout_ == Layout::kUnstructured ? kernels.spmm_csr : kernels.spmm_block4;
  for (int32_t g = 0; g < groups(); ++g) {
    const int64_t base = static_cast<int64_t>(g) * group_rows_;
    Epilogue step;
    step.accumulate = b > 0;
    step.bias = bias_.data() + base;
    if (residual) {
      step.residual = residual + base * kTileTokens;
      step.ldr = kTileTokens;
    }
    spmm(kblock_view(b), group_pairs_[g], group_pairs_[g + 1], x_block, kTileTokens, y + base * kTileTokens,
         kTileTokens, n, step);
  }
}

void PackedLinear::forward(const KernelTable& kernels, ThreadPool& pool, const TileMatrix& x, TileMatrix& y,
                           Activation act, const TileMatrix* residual, LinearScratch* scratch) const {
  y.resize(rows_, x.tokens());
  const TileView r = residual ? residual->view() : TileView(nullptr, 0, 0, 0);
  forward(kernels, pool, x.view(), y.view(), act, residual ? &r : nullptr, scratch);
}

void PackedLinear::forward(const KernelTable& kernels, ThreadPool& pool, const TileView& x, const TileView& y,
                           Activation act, const TileView* residual, LinearScratch* scratch) const {
  if (x.features() != cols_)
    throw std::invalid_argument("PackedLinear: input has " + std::to_string(x.features()) + " features, expected " +
                                std::to_string(cols_));
  if (y.features() != rows_ || y.tokens() != x.tokens())
    throw std::invalid_argument("PackedLinear: output shape does not match");
  if (residual && (residual->features() != rows_ || residual->tokens() != x.tokens()))
    throw std::invalid_argument("PackedLinear: residual shape does not match the output");
  if (layout_ == Layout::kBlock4Int8) return forward_int8(kernels, pool, x, y, act, residual, scratch);
  const int32_t tiles = x.num_tiles();
  const bool dense = layout_ == Layout::kDense;
  // Static schedule with the same tile -> thread map as every other op (pool.parallel_for_static): a thread
  // reads the activations it wrote itself. When the tiles do not divide evenly among the threads, each tile is
  // cut into `chunks` row pieces so that every thread gets the same amount of work: threads / gcd(tiles,
  // threads) pieces per tile make the task count a multiple of the thread count.
  const int threads = pool.size();
  int chunks = threads / std::gcd(tiles, threads);
  const int32_t units = dense ? rows_ / 16 : static_cast<int32_t>(panel_pairs_.size()) - 1;
  chunks = std::max(1, std::min(chunks, units));
  std::vector<int32_t> bounds;
  if (dense) {
    bounds.assign(chunks + 1, rows_);
    for (int c = 0; c < chunks; ++c) bounds[c] = static_cast<int32_t>(static_cast<int64_t>(rows_) * c / chunks);
  } else {
    bounds = split_pairs(chunks);
  }
  pool.parallel_for_static(tiles * chunks, [&](int task, int) {
    const int32_t tile = task / chunks, chunk = task % chunks;
    Epilogue ep;
    ep.bias = bias_.data();
    ep.act = act;
    if (residual) {
      ep.residual = residual->tile(tile);
      ep.ldr = kTileTokens;
    }
    if (dense)
      run_dense_rows(kernels, bounds[chunk], bounds[chunk + 1], x.tile(tile), y.tile(tile), x.tokens_in_tile(tile), ep);
    else
      run_sparse_pairs(kernels, bounds[chunk], bounds[chunk + 1], x.tile(tile), y.tile(tile),
                       x.tokens_in_tile(tile), ep);
  });
}

}  // namespace sparsebert
