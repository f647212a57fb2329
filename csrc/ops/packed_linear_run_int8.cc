// The int8 forward of PackedLinear (layout block4_int8): each input tile is quantized once to u8 with a scale
// and zero point per token (kernels.h, QuantizeFn), then row ranges run the int8 kernel in parallel and
// dequantize straight into the float output (bias, residual and activation as for the float layouts).
#include <algorithm>
#include <cstring>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <vector>

#include "common/thread_pool.h"
#include "ops/packed_linear.h"

namespace sparsebert {

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

void PackedLinear::forward_int8(const KernelTable& kernels, ThreadPool& pool, const TileView& x, const TileView& y,
                                Activation act, const TileView* residual, LinearScratch* scratch) const {
  const int32_t tiles = x.num_tiles();
  const int64_t blocks = (cols_ + 3) / 4;
  const int64_t tile_bytes = blocks * kTileTokens * 4;
  // The quantized input of one group of tiles at a time, so the int8 path needs no working memory per token beyond
  // what the float path does. In the caller's scratch when it keeps one, else per call: a PackedLinear is shared
  // and may run in several engines at once.
  const int threads = pool.size();
  const int32_t group = std::min(tiles, std::max<int32_t>(kInt8GroupTiles, 2 * threads));
  LinearScratch local;
  LinearScratch& buffers = scratch ? *scratch : local;
  buffers.xq.ensure(static_cast<std::size_t>(tile_bytes * group));
  buffers.x_scale.ensure(static_cast<std::size_t>(kTileTokens) * group);
  buffers.x_zero.ensure(static_cast<std::size_t>(kTileTokens) * group);
  uint8_t* const xq = buffers.xq.data();
  float* const x_scale = buffers.x_scale.data();
  int32_t* const x_zero = buffers.x_zero.data();
  const Int8View view = int8_view(kernels);
  const bool has_act = act != Activation::kNone;
  for (int32_t t0 = 0; t0 < tiles; t0 += group) {
    const int32_t count = std::min(group, tiles - t0);
    const auto quantize_tile = [&](int32_t i) {
      const int32_t tile = t0 + i;
      kernels.quantize(cols_, x.tokens_in_tile(tile), x.tile(tile), kTileTokens, xq + i * tile_bytes,
                       kTileTokens, x_scale + i * kTileTokens, x_zero + i * kTileTokens);
    };
    // As in forward(): tiles cut into row pieces so that every thread gets the same share. When a thread owns
    // whole tiles it quantizes its own tile right before the product: no barrier between the two, and the
    // quantized tile is still in that core's cache.
    const int chunks = std::max(1, std::min(threads / std::gcd(count, threads), rows_));
    if (chunks > 1) pool.parallel_for_static(count, [&](int i, int) { quantize_tile(i); });
    const std::vector<int32_t> bounds = split_int8_rows(view.ptr, chunks);
    pool.parallel_for_static(count * chunks, [&](int task, int) {
      const int32_t i = task / chunks, chunk = task % chunks, tile = t0 + i;
      const int32_t r0 = bounds[chunk], r1 = bounds[chunk + 1], n = x.tokens_in_tile(tile);
      if (chunks == 1) quantize_tile(i);
      if (r0 >= r1) return;
      Epilogue ep;
      ep.bias = bias_.data();
      if (residual && !has_act) {  // an activation comes between the sum and the residual
        ep.residual = residual->tile(tile);
        ep.ldr = kTileTokens;
      }
      kernels.spmm_block4_i8(view, r0, r1, xq + i * tile_bytes, kTileTokens, x_scale + i * kTileTokens,
                             x_zero + i * kTileTokens, y.tile(tile), kTileTokens, n, ep);
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
}

}  // namespace sparsebert
