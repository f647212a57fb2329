#include "ops/tiled_ffn.h"

#include <algorithm>
#include <stdexcept>

#include "common/thread_pool.h"

namespace sparsebert {

void tiled_ffn(const KernelTable& kernels, ThreadPool& pool, const PackedLinear& up, const PackedLinear& down,
               Activation act, const TileMatrix& x, TileMatrix& y, int32_t group_tiles, TiledFfnScratch& scratch) {
  if (x.features() != up.cols() || up.rows() != down.cols() || group_tiles < 1)
    throw std::invalid_argument("tiled_ffn: layers or input do not chain");
  y.resize(down.rows(), x.tokens());
  for (int32_t t0 = 0; t0 < x.num_tiles(); t0 += group_tiles) {
    const TileView xg = x.view(t0, std::min(group_tiles, x.num_tiles() - t0));
    scratch.mid.resize(up.rows(), xg.tokens());
    up.forward(kernels, pool, xg, scratch.mid.view(), act, nullptr, &scratch.linear);
    down.forward(kernels, pool, scratch.mid.view(), y.view(t0, xg.num_tiles()), Activation::kNone, &xg,
                 &scratch.linear);
  }
}

}  // namespace sparsebert
