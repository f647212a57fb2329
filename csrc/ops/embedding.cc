#include "ops/embedding.h"

#include "common/thread_pool.h"

namespace sparsebert {

void embed(const KernelTable& kernels, ThreadPool& pool, const EmbeddingTables& e, const int32_t* ids,
           const int32_t* types, const int32_t* positions, int32_t tokens, TileMatrix& out) {
  const int32_t hidden = e.hidden;
  out.resize(hidden, tokens);
  pool.parallel_for_static(out.num_tiles(), [&](int tile, int) {
    float* dst = out.tile(tile);
    const int32_t n = out.tokens_in_tile(tile);
    for (int32_t lane = 0; lane < n; ++lane) {
      const int32_t t = tile * kTileTokens + lane;
      const float* w = e.word.data() + static_cast<int64_t>(ids[t]) * hidden;
      const float* ty = e.token_type.data() + static_cast<int64_t>(types[t]) * hidden;
      const float* p = e.position.data() + static_cast<int64_t>(positions[t]) * hidden;
      // Same association as PyTorch ((word + type) + position), so the sums round identically.
      for (int32_t f = 0; f < hidden; ++f) dst[static_cast<int64_t>(f) * kTileTokens + lane] = (w[f] + ty[f]) + p[f];
    }
    kernels.layer_norm(hidden, n, dst, kTileTokens, dst, kTileTokens, e.gamma.data(), e.beta.data(), e.eps);
  });
}

}  // namespace sparsebert
