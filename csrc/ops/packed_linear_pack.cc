// Packing a PackedLinear: the constructors validate the caller's arrays completely (so no kernel ever sees an
// index out of range) and build the layout the kernels stream (see packed_linear.h). Nothing here runs a kernel.
#include <algorithm>
#include <cstring>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "ops/packed_arrays.h"
#include "ops/packed_linear.h"

namespace sparsebert {
namespace {

// A byte pair (bytes 0-1 or 2-3 of a block) the bounded-pairs kernels take as it is (kernels.h).
bool pair_bounded(int8_t a, int8_t b) {
  const int pos = std::max<int>(a, 0) + std::max<int>(b, 0), neg = std::min<int>(a, 0) + std::min<int>(b, 0);
  return pos <= 128 && neg >= -128;
}

// Columns per K-block. The activation panel of one block (cols x kTileTokens floats) should fit in L1 next to
// the streams of weights and outputs: 128 columns = 32 KiB. Blocks only pay while each row still has a few
// entries per block to amortise reloading its partial sums, so very sparse matrices get wider blocks.
// PackOptions::kblock_cols overrides the choice (for tuning and tests).
int32_t choose_kblock_cols(int32_t rows, int32_t cols, int64_t entries, int width, const PackOptions& options) {
  constexpr int32_t kL1Cols = 128;
  constexpr double kMinWeightsPerRowBlock = 12.0;  // measured: 97% unstructured then runs unblocked, 1.14x faster
  if (options.kblock_cols > 0) return std::min(cols, (options.kblock_cols + 3) / 4 * 4);
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
// K-blocks. PackOptions::group_panels overrides the choice (for tuning and tests).
int32_t choose_group_rows(int32_t rows, int32_t cols, int32_t panel_rows, const PackOptions& options) {
  if (options.group_panels >= 0)
    return options.group_panels > 0 ? static_cast<int32_t>(std::min<int64_t>(rows, int64_t{options.group_panels} *
                                                                                        panel_rows))
                                    : rows;
  return rows >= 2 * cols ? std::min(rows, PackedLinear::kGroupRows) : rows;
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
  check_dense(rows, cols);
  std::shared_ptr<PackedLinear> p(new PackedLinear(Layout::kDense, rows, cols));
  p->dense_.assign(weight, static_cast<std::size_t>(rows) * cols);
  p->stored_ = static_cast<int64_t>(rows) * cols;
  p->set_bias(bias);
  return p;
}

std::shared_ptr<PackedLinear> PackedLinear::unstructured(int32_t rows, int32_t cols, const int32_t* row_ptr,
                                                         int64_t row_ptr_len, const uint16_t* col_idx,
                                                         const float* values, int64_t nnz, const float* bias,
                                                         const PackOptions& options) {
  check_unstructured(rows, cols, CompressedRows{row_ptr, row_ptr_len, col_idx, nnz});
  std::shared_ptr<PackedLinear> p(new PackedLinear(Layout::kUnstructured, rows, cols));
  p->stored_ = nnz;
  p->pack_pairs(row_ptr, col_idx, values, 1, options);
  p->set_bias(bias);
  return p;
}

std::shared_ptr<PackedLinear> PackedLinear::block4(int32_t rows, int32_t cols, const int32_t* block_ptr,
                                                   int64_t block_ptr_len, const uint16_t* block_col,
                                                   const float* values, int64_t nb, const float* bias,
                                                   const PackOptions& options) {
  check_block4(rows, cols, CompressedRows{block_ptr, block_ptr_len, block_col, nb}, values);
  std::shared_ptr<PackedLinear> p(new PackedLinear(Layout::kBlock4, rows, cols));
  p->stored_ = 4 * nb;
  p->pack_pairs(block_ptr, block_col, values, 4, options);
  p->set_bias(bias);
  return p;
}

std::shared_ptr<PackedLinear> PackedLinear::block4_int8(int32_t rows, int32_t cols, const int32_t* block_ptr,
                                                        int64_t block_ptr_len, const uint16_t* block_col,
                                                        const int8_t* values, int64_t nb, const float* scales,
                                                        const float* bias) {
  check_block4_int8(rows, cols, CompressedRows{block_ptr, block_ptr_len, block_col, nb}, values, scales);
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

void PackedLinear::pack_pairs(const int32_t* ptr, const uint16_t* idx, const float* values, int width,
                              const PackOptions& options) {
  const int64_t entries = ptr[rows_];
  kblock_cols_ = choose_kblock_cols(rows_, cols_, entries, width, options);
  kblocks_ = (cols_ + kblock_cols_ - 1) / kblock_cols_;
  group_rows_ = choose_group_rows(rows_, cols_, kPanelRows, options);
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
  if (total > INT32_MAX) throw std::invalid_argument("PackedLinear: too many entries after packing");
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

Int8View PackedLinear::int8_view(const KernelTable& kernels) const {
  if (!kernels.int8_bounded_pairs)
    return Int8View{i8_ptr_.data(), i8_col_.data(), i8_val_.data(), w_scale_.data(), w_sum_.data()};
  std::call_once(bounded_once_, [this] {
    // A block with an unbounded pair becomes w / 2 (toward zero, |.| <= 64) and w - w / 2 (|.| <= 64) on the same
    // inputs: every pair of each then sums to at most 128 in size, and the two add up to the block exactly.
    const int32_t* ptr = i8_ptr_.data();
    const int64_t nb = ptr[rows_];
    std::vector<int32_t> val;
    std::vector<uint16_t> col;
    val.reserve(static_cast<std::size_t>(nb));
    col.reserve(static_cast<std::size_t>(nb));
    bounded_ptr_.reset(static_cast<std::size_t>(rows_) + 1);
    bounded_ptr_.data()[0] = 0;
    for (int32_t r = 0; r < rows_; ++r) {
      for (int32_t j = ptr[r]; j < ptr[r + 1]; ++j) {
        int8_t w[4];
        std::memcpy(w, &i8_val_.data()[j], 4);
        if (pair_bounded(w[0], w[1]) && pair_bounded(w[2], w[3])) {
          val.push_back(i8_val_.data()[j]);
          col.push_back(i8_col_.data()[j]);
          continue;
        }
        int8_t half[4], rest[4];
        for (int q = 0; q < 4; ++q) {
          half[q] = static_cast<int8_t>(w[q] / 2);
          rest[q] = static_cast<int8_t>(w[q] - half[q]);
        }
        int32_t word;
        std::memcpy(&word, half, 4);
        val.push_back(word);
        std::memcpy(&word, rest, 4);
        val.push_back(word);
        col.insert(col.end(), 2, i8_col_.data()[j]);
      }
      if (val.size() > static_cast<std::size_t>(std::numeric_limits<int32_t>::max()))
        throw std::length_error("block4_int8 PackedLinear: too many blocks after splitting for the AVX2 kernel");
      bounded_ptr_.data()[r + 1] = static_cast<int32_t>(val.size());
    }
    bounded_val_.assign(val.data(), val.size());
    bounded_col_.assign(col.data(), col.size());
  });
  return Int8View{bounded_ptr_.data(), bounded_col_.data(), bounded_val_.data(), w_scale_.data(), w_sum_.data()};
}

}  // namespace sparsebert
