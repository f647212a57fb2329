// The int8 forward of PackedLinear (layout block4_int8): each input tile is quantized once to u8 with a scale
// and zero point per token (kernels.h, QuantizeFn), then row ranges run the int8 kernel in parallel and
// dequantize straight into the float output (bias, residual and activation as for the float layouts).
#include <algorithm>
#include <cstring>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <vector>

#include "encoder/thread_pool.h"
#include "ops/packed_linear.h"

namespace sparsebert {

namespace {

// A byte pair (bytes 0-1 or 2-3 of a block) the bounded-pairs kernels take as it is (kernels.h).
bool pair_bounded(int8_t a, int8_t b) {
  const int pos = std::max<int>(a, 0) + std::max<int>(b, 0), neg = std::min<int>(a, 0) + std::min<int>(b, 0);
  return pos <= 128 && neg >= -128;
}

}  // namespace

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

std::vector<int32_t> PackedLinear::split_int8_rows(const int32_t* ptr, int chunks) const {
  // Equal work: a row costs its blocks plus a little for its epilogue.
  std::vector<int32_t> bounds(chunks + 1, rows_);
  bounds[0] = 0;
  const int64_t total = static_cast<int64_t>(ptr[rows_]) + 2 * static_cast<int64_t>(rows_);
  int32_t r = 0;
  for (int c = 1; c < chunks; ++c) {
    const int64_t target = total * c / chunks;
    while (r < rows_ && static_cast<int64_t>(ptr[r]) + 2 * static_cast<int64_t>(r) < target) ++r;
    bounds[c] = r;
  }
  return bounds;
}

void PackedLinear::forward_int8(const KernelTable& kernels, ThreadPool& pool, const TileMatrix& x, TileMatrix& y,
                                Activation act, const TileMatrix* residual) const {
  const int32_t tiles = x.num_tiles();
  const int64_t blocks = (cols_ + 3) / 4;
  const int64_t tile_bytes = blocks * kTileTokens * 4;
  // Per call, not per engine: a PackedLinear is shared and may run in several engines at once.
  AlignedBuffer<uint8_t> xq;
  AlignedBuffer<float> x_scale;
  AlignedBuffer<int32_t> x_zero;
  xq.reset(static_cast<std::size_t>(tile_bytes * tiles));
  x_scale.reset(static_cast<std::size_t>(kTileTokens) * tiles);
  x_zero.reset(static_cast<std::size_t>(kTileTokens) * tiles);
  pool.parallel_for_static(tiles, [&](int tile, int) {
    kernels.quantize(cols_, x.tokens_in_tile(tile), x.tile(tile), kTileTokens, xq.data() + tile * tile_bytes,
                     kTileTokens, x_scale.data() + tile * kTileTokens, x_zero.data() + tile * kTileTokens);
  });
  // As in forward(): tiles cut into row pieces so that every thread gets the same share.
  const int threads = pool.size();
  const int chunks = std::max(1, std::min(threads / std::gcd(tiles, threads), rows_));
  const Int8View view = int8_view(kernels);
  const std::vector<int32_t> bounds = split_int8_rows(view.ptr, chunks);
  const bool has_act = act != Activation::kNone;
  pool.parallel_for_static(tiles * chunks, [&](int task, int) {
    const int32_t tile = task / chunks, chunk = task % chunks;
    const int32_t r0 = bounds[chunk], r1 = bounds[chunk + 1], n = x.tokens_in_tile(tile);
    if (r0 >= r1) return;
    Epilogue ep;
    ep.bias = bias_.data();
    if (residual && !has_act) {  // an activation comes between the sum and the residual
      ep.residual = residual->tile(tile);
      ep.ldr = kTileTokens;
    }
    kernels.spmm_block4_i8(view, r0, r1, xq.data() + tile * tile_bytes, kTileTokens,
                           x_scale.data() + tile * kTileTokens, x_zero.data() + tile * kTileTokens, y.tile(tile),
                           kTileTokens, n, ep);
    if (!has_act) return;
    Epilogue rest;
    rest.act = act;
    if (residual) {
      rest.residual = residual->tile(tile);
      rest.ldr = kTileTokens;
    }
    kernels.finish_rows(row_ids_.data() + r0, r1 - r0, y.tile(tile), kTileTokens, n, rest);
  });
}

}  // namespace sparsebert
