#include "ops/tiled_ffn.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "common/thread_pool.h"

namespace sparsebert {
namespace {

// Tiles [t0, t0 + count) of src into dst (resized to hold exactly them).
void copy_tiles_out(const TileMatrix& src, int32_t t0, int32_t count, TileMatrix& dst) {
  const int32_t tokens = std::min(src.tokens() - t0 * kTileTokens, count * kTileTokens);
  dst.resize(src.features(), tokens);
  std::memcpy(dst.tile(0), src.tile(t0), static_cast<std::size_t>(src.tile_stride()) * count * sizeof(float));
}

void copy_tiles_in(const TileMatrix& src, int32_t t0, TileMatrix& dst) {
  std::memcpy(dst.tile(t0), src.tile(0),
              static_cast<std::size_t>(src.tile_stride()) * src.num_tiles() * sizeof(float));
}

}  // namespace

void tiled_ffn(const KernelTable& kernels, ThreadPool& pool, const PackedLinear& up, const PackedLinear& down,
               Activation act, const TileMatrix& x, TileMatrix& y, int32_t group_tiles, TiledFfnScratch& scratch) {
  if (x.features() != up.cols() || up.rows() != down.cols() || group_tiles < 1)
    throw std::invalid_argument("tiled_ffn: layers or input do not chain");
  y.resize(down.rows(), x.tokens());
  for (int32_t t0 = 0; t0 < x.num_tiles(); t0 += group_tiles) {
    const int32_t count = std::min(group_tiles, x.num_tiles() - t0);
    copy_tiles_out(x, t0, count, scratch.x);
    up.forward(kernels, pool, scratch.x, scratch.mid, act);
    down.forward(kernels, pool, scratch.mid, scratch.y, Activation::kNone, &scratch.x);
    copy_tiles_in(scratch.y, t0, y);
  }
}

}  // namespace sparsebert
