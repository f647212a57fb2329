#include "ops/packed_linear.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <utility>
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

// A block that runs past K must hold zeros there: those weights belong to no input (float or int8 values).
template <class T>
void check_block_tail(const char* what, int32_t cols, const uint16_t* block_col, const T* values, int64_t nb) {
  const int32_t tail = cols % 4, last_block = cols / 4;
  if (tail == 0) return;
  for (int64_t j = 0; j < nb; ++j)
    if (block_col[j] == last_block)
      for (int32_t q = tail; q < 4; ++q)
        require(values[4 * j + q] == T(0), std::string(what) + ": block " + std::to_string(last_block) +
                                               " has a nonzero weight past the last input column");
}

}  // namespace

const char* layout_name(Layout layout) {
  switch (layout) {
    case Layout::kDense: return "dense";
    case Layout::kUnstructured: return "unstructured";
    case Layout::kBlock4: return "block4";
    case Layout::kBlock4Int8: return "block4_int8";
  }
  return "?";
}

std::shared_ptr<PackedLinear> PackedLinear::dense(int32_t rows, int32_t cols, const float* weight,
                                                  const float* bias) {
  check_shape(rows, cols);
  std::shared_ptr<PackedLinear> p(new PackedLinear(Layout::kDense, rows, cols));
  p->dense_.assign(weight, static_cast<std::size_t>(rows) * cols);
  p->stored_ = static_cast<int64_t>(rows) * cols;
  p->set_bias(bias);
  return p;
}

std::shared_ptr<PackedLinear> PackedLinear::unstructured(int32_t rows, int32_t cols, const int32_t* row_ptr,
                                                         int64_t row_ptr_len, const uint16_t* col_idx,
                                                         const float* values, int64_t nnz, const float* bias) {
  check_shape(rows, cols);
  check_compressed("unstructured PackedLinear", rows, row_ptr, row_ptr_len, col_idx, nnz, cols);
  std::shared_ptr<PackedLinear> p(new PackedLinear(Layout::kUnstructured, rows, cols));
  p->stored_ = nnz;
  p->pack_pairs(row_ptr, col_idx, values, 1);
  p->set_bias(bias);
  return p;
}

std::shared_ptr<PackedLinear> PackedLinear::block4(int32_t rows, int32_t cols, const int32_t* block_ptr,
                                                   int64_t block_ptr_len, const uint16_t* block_col,
                                                   const float* values, int64_t nb, const float* bias) {
  check_shape(rows, cols);
  check_compressed("block4 PackedLinear", rows, block_ptr, block_ptr_len, block_col, nb, (cols + 3) / 4);
  check_block_tail("block4 PackedLinear", cols, block_col, values, nb);
  std::shared_ptr<PackedLinear> p(new PackedLinear(Layout::kBlock4, rows, cols));
  p->stored_ = 4 * nb;
  p->pack_pairs(block_ptr, block_col, values, 4);
  p->set_bias(bias);
  return p;
}

std::shared_ptr<PackedLinear> PackedLinear::block4_int8(int32_t rows, int32_t cols, const int32_t* block_ptr,
                                                        int64_t block_ptr_len, const uint16_t* block_col,
                                                        const int8_t* values, int64_t nb, const float* scales,
                                                        const float* bias) {
  check_shape(rows, cols);
  require(cols <= kInt8MaxCols, "block4_int8 PackedLinear: at most " + std::to_string(kInt8MaxCols) +
                                    " input columns (int32 sums stay exact), got " + std::to_string(cols));
  check_compressed("block4_int8 PackedLinear", rows, block_ptr, block_ptr_len, block_col, nb, (cols + 3) / 4);
  check_block_tail("block4_int8 PackedLinear", cols, block_col, values, nb);
  for (int32_t r = 0; r < rows; ++r)
    require(scales[r] >= 0.0f && scales[r] < 3.0e38f,
            "block4_int8 PackedLinear: scale of row " + std::to_string(r) + " is not a finite value >= 0");
  std::shared_ptr<PackedLinear> p(new PackedLinear(Layout::kBlock4Int8, rows, cols));
  p->stored_ = 4 * nb;
  p->i8_ptr_.assign(block_ptr, static_cast<std::size_t>(rows) + 1);
  p->i8_col_.assign(block_col, static_cast<std::size_t>(nb));
  p->i8_val_.reset(static_cast<std::size_t>(nb));
  std::memcpy(p->i8_val_.data(), values, static_cast<std::size_t>(nb) * 4);
  p->w_scale_.assign(scales, static_cast<std::size_t>(rows));
  p->w_sum_.reset(static_cast<std::size_t>(rows));
  p->row_ids_.reset(static_cast<std::size_t>(rows));
  for (int32_t r = 0; r < rows; ++r) {
    int32_t sum = 0;
    for (int64_t j = 4 * static_cast<int64_t>(block_ptr[r]); j < 4 * static_cast<int64_t>(block_ptr[r + 1]); ++j)
      sum += values[j];
    p->w_sum_.data()[r] = sum;
    p->row_ids_.data()[r] = r;
  }
  p->set_bias(bias);
  return p;
}

void PackedLinear::set_bias(const float* bias) {
  bias_.reset(rows_);
  if (bias) std::copy(bias, bias + rows_, bias_.data());
}

namespace {

// Columns per K-block. The activation panel of one block (cols x kTileTokens floats) should fit in L1 next to
// the streams of weights and outputs: 128 columns = 32 KiB. Blocks only pay while each row still has a few
// entries per block to amortise reloading its partial sums, so very sparse matrices get wider blocks.
// SPARSEBERT_KBLOCK overrides the choice (for tuning).
int32_t choose_kblock_cols(int32_t rows, int32_t cols, int64_t entries, int width) {
  constexpr int32_t kL1Cols = 128;
  constexpr double kMinWeightsPerRowBlock = 12.0;  // measured: 97% unstructured then runs unblocked, 1.14x faster
  if (const char* env = std::getenv("SPARSEBERT_KBLOCK")) {
    const int v = std::atoi(env);
    if (v > 0) return std::min(cols, (v + 3) / 4 * 4);
  }
  const double density = static_cast<double>(entries) * width / (static_cast<double>(rows) * cols);
  int32_t kb = kL1Cols;
  while (kb < cols && density * kb < kMinWeightsPerRowBlock) kb *= 2;
  // A last block much narrower than the others would cost a full pass over the outputs for little work.
  if (cols <= kb + kb / 2) return cols;
  return kb;
}

// Rows per row group. The kernel runs every K-block over one group of rows before the next, so the group's
// partial sums stay in L1 between blocks. That pays where the outputs are much larger than the inputs (QKV,
// FFN up: 5-7% off the whole model at 90% measured in the engine); where they are not (FFN down), re-reading
// the wide input once per group costs more than it saves, and the whole matrix is one group. Groups are ranges
// of consecutive rows, so a fused FFN can hand one group of FFN-up outputs straight to FFN down as one of its
// K-blocks. SPARSEBERT_ROWGROUP=P (panels per group, 0: one group) overrides the choice (for tuning).
int32_t choose_group_rows(int32_t rows, int32_t cols, int32_t panel_rows) {
  if (const char* env = std::getenv("SPARSEBERT_ROWGROUP")) {
    const int panels = std::atoi(env);
    return panels > 0 ? std::min(rows, panels * panel_rows) : rows;
  }
  return rows >= 2 * cols ? std::min(rows, PackedLinear::kGroupRows) : rows;
}

}  // namespace

void PackedLinear::pack_pairs(const int32_t* ptr, const uint16_t* idx, const float* values, int width) {
  const int64_t entries = ptr[rows_];
  kblock_cols_ = choose_kblock_cols(rows_, cols_, entries, width);
  kblocks_ = (cols_ + kblock_cols_ - 1) / kblock_cols_;
  group_rows_ = choose_group_rows(rows_, cols_, kPanelRows);
  const int32_t groups = (rows_ + group_rows_ - 1) / group_rows_;
  // Entries index columns (width 1) or 4-blocks (width 4); a 4-block never straddles K-blocks because
  // kblock_cols_ is a multiple of 4 unless it covers all of K. Stored indices count from their block's start.
  const int32_t block_index_span = kblock_cols_ / width;
  auto kblock_of = [&](int32_t index) { return index * width / kblock_cols_; };

  // Within each row group, rows longest first, so each panel holds rows of similar total work. Panels never
  // straddle groups (a group's last panel may be short).
  std::vector<int32_t> order(rows_);
  std::iota(order.begin(), order.end(), 0);
  std::vector<int32_t> panel_first_row{0};  // panels + 1 offsets into `order`
  group_pairs_.assign(groups + 1, 0);
  panel_pairs_.assign(1, 0);
  for (int32_t g = 0; g < groups; ++g) {
    const int32_t r0 = g * group_rows_, r1 = std::min(rows_, r0 + group_rows_);
    std::stable_sort(order.begin() + r0, order.begin() + r1,
                     [&](int32_t a, int32_t b) { return ptr[a + 1] - ptr[a] > ptr[b + 1] - ptr[b]; });
    for (int32_t r = r0; r < r1; r += kPanelRows) {
      const int32_t n = std::min(kPanelRows, r1 - r);
      panel_first_row.push_back(r + n);
      panel_pairs_.push_back(panel_pairs_.back() + (n + 1) / 2);
    }
    group_pairs_[g + 1] = panel_pairs_.back();
  }
  const int32_t panels = static_cast<int32_t>(panel_pairs_.size()) - 1;
  pairs_ = panel_pairs_[panels];

  // Each row's entries split by K-block: seg[r * kblocks_ + b] = [first, last) entry of row r in block b.
  std::vector<std::pair<int32_t, int32_t>> seg(static_cast<std::size_t>(rows_) * kblocks_);
  for (int32_t r = 0; r < rows_; ++r) {
    int32_t j = ptr[r];
    for (int32_t b = 0; b < kblocks_; ++b) {
      const int32_t first = j;
      while (j < ptr[r + 1] && kblock_of(idx[j]) == b) ++j;
      seg[static_cast<std::size_t>(r) * kblocks_ + b] = {first, j};
    }
  }
  auto seg_len = [&](int32_t r, int32_t b) {
    const auto& s = seg[static_cast<std::size_t>(r) * kblocks_ + b];
    return s.second - s.first;
  };

  // Pass 1: the pairing of every (block, panel) and the padded length of every pair. Rows are stored relative
  // to their group's first row.
  pair_rows_.reset(static_cast<std::size_t>(kblocks_) * pairs_ * 2);
  pair_ptr_.reset(static_cast<std::size_t>(kblocks_) * (pairs_ + 1));
  panel_work_.assign(panels + 1, 0);
  int64_t total = 0;
  std::vector<int32_t> members;
  for (int32_t b = 0; b < kblocks_; ++b) {
    int32_t* rows_b = pair_rows_.data() + static_cast<std::size_t>(b) * pairs_ * 2;
    int32_t* ptr_b = pair_ptr_.data() + static_cast<std::size_t>(b) * (pairs_ + 1);
    for (int32_t g = 0; g < panels; ++g) {
      members.assign(order.begin() + panel_first_row[g], order.begin() + panel_first_row[g + 1]);
      const int32_t row_base = members.front() / group_rows_ * group_rows_;
      std::stable_sort(members.begin(), members.end(),
                       [&](int32_t a, int32_t c) { return seg_len(a, b) > seg_len(c, b); });
      for (std::size_t m = 0; m < members.size(); m += 2) {
        const int32_t p = panel_pairs_[g] + static_cast<int32_t>(m / 2);
        const int32_t r0 = members[m], r1 = m + 1 < members.size() ? members[m + 1] : -1;
        rows_b[2 * p] = r0 - row_base;
        rows_b[2 * p + 1] = r1 < 0 ? -1 : r1 - row_base;
        const int32_t len = std::max(seg_len(r0, b), r1 < 0 ? 0 : seg_len(r1, b));
        ptr_b[p] = static_cast<int32_t>(total);
        total += len;
        panel_work_[g + 1] += len;
      }
    }
    ptr_b[pairs_] = static_cast<int32_t>(total);
  }
  require(total <= INT32_MAX, "PackedLinear: too many entries after packing");
  for (int32_t g = 0; g < panels; ++g) panel_work_[g + 1] += panel_work_[g];

  // Pass 2: interleave each pair's entries; the shorter row is padded with weight-0 entries that repeat one of
  // its indices in this block (or the block's first index), so every load stays inside the block's panel.
  idx_.reset(2 * total);
  values_.reset(2 * total * width);
  for (int32_t b = 0; b < kblocks_; ++b) {
    const int32_t* rows_b = pair_rows_.data() + static_cast<std::size_t>(b) * pairs_ * 2;
    const int32_t* ptr_b = pair_ptr_.data() + static_cast<std::size_t>(b) * (pairs_ + 1);
    const int32_t block_start = b * block_index_span;
    for (int32_t g = 0; g < groups; ++g) {
      for (int32_t p = group_pairs_[g]; p < group_pairs_[g + 1]; ++p) {
        for (int32_t side = 0; side < 2; ++side) {
          const int32_t local = rows_b[2 * p + side];
          const int32_t r = local < 0 ? -1 : g * group_rows_ + local;
          const auto s = r < 0 ? std::pair<int32_t, int32_t>{0, 0} : seg[static_cast<std::size_t>(r) * kblocks_ + b];
          for (int32_t e = ptr_b[p]; e < ptr_b[p + 1]; ++e) {
            const int32_t j = s.first + (e - ptr_b[p]);
            const bool real = j < s.second;
            const int32_t index = real ? idx[j] : (s.second > s.first ? idx[s.second - 1] : block_start);
            idx_[2 * static_cast<int64_t>(e) + side] = static_cast<uint16_t>(index - block_start);
            float* dst = values_.data() + (2 * static_cast<int64_t>(e) + side) * width;
            for (int q = 0; q < width; ++q) dst[q] = real ? values[static_cast<int64_t>(j) * width + q] : 0.0f;
          }
        }
      }
    }
  }
}

int64_t PackedLinear::nbytes() const {
  return static_cast<int64_t>(bias_.nbytes() + dense_.nbytes() + pair_ptr_.nbytes() + pair_rows_.nbytes() +
                              idx_.nbytes() + values_.nbytes() +
                              (panel_pairs_.size() + group_pairs_.size()) * sizeof(int32_t) +
                              panel_work_.size() * sizeof(int64_t) + i8_ptr_.nbytes() + i8_col_.nbytes() +
                              i8_val_.nbytes() + w_scale_.nbytes() + w_sum_.nbytes() + row_ids_.nbytes());
}

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
                           Activation act, const TileMatrix* residual) const {
  if (x.features() != cols_)
    throw std::invalid_argument("PackedLinear: input has " + std::to_string(x.features()) + " features, expected " +
                                std::to_string(cols_));
  y.resize(rows_, x.tokens());
  if (residual && (residual->features() != rows_ || residual->tokens() != x.tokens()))
    throw std::invalid_argument("PackedLinear: residual shape does not match the output");
  if (layout_ == Layout::kBlock4Int8) return forward_int8(kernels, pool, x, y, act, residual);
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
