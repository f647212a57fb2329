#include "ops/layer_norm.h"

#include "common/thread_pool.h"

namespace sparsebert {

void layer_norm(const KernelTable& kernels, ThreadPool& pool, const LayerNormWeights& weights, float eps,
                TileMatrix& x) {
  pool.parallel_for_static(x.num_tiles(), [&](int tile, int) {
    kernels.layer_norm(x.features(), x.tokens_in_tile(tile), x.tile(tile), kTileTokens, x.tile(tile), kTileTokens,
                       weights.gamma.data(), weights.beta.data(), eps);
  });
}

}  // namespace sparsebert
