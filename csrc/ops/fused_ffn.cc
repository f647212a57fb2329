#include "ops/fused_ffn.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "common/thread_pool.h"

namespace sparsebert {

bool ffn_fusable(const PackedLinear& up, const PackedLinear& down) {
  if (!up.sparse() || !down.sparse()) return false;
  if (down.cols() != up.rows() || down.rows() != up.cols()) return false;
  // A block boundary of `down` must fall on a group boundary of `up` (one block covering all of K always does).
  return down.kblocks() == 1 || down.kblock_cols() % up.group_rows() == 0;
}

void fused_ffn(const KernelTable& kernels, ThreadPool& pool, const PackedLinear& up, const PackedLinear& down,
               Activation act, const TileMatrix& x, TileMatrix& y, std::vector<AlignedBuffer<float>>& scratch) {
  if (!ffn_fusable(up, down) || x.features() != up.cols())
    throw std::invalid_argument("fused_ffn: layers or input do not chain");
  y.resize(down.rows(), x.tokens());
  // Rounded up to whole 4-blocks: a 4-block kernel reads the block that holds the last column whole.
  const int32_t panel_rows = (down.kblock_cols() + 3) / 4 * 4;
  scratch.resize(pool.size());
  for (auto& s : scratch) s.ensure(static_cast<std::size_t>(panel_rows) * kTileTokens);

  pool.parallel_for_static(x.num_tiles(), [&](int tile, int thread) {
    float* panel = scratch[thread].data();
    const float* xt = x.tile(tile);
    float* yt = y.tile(tile);
    const int32_t n = x.tokens_in_tile(tile);
    const int32_t kb = down.kblock_cols(), gr = up.group_rows();
    for (int32_t b = 0; b < down.kblocks(); ++b) {
      const int32_t c0 = b * kb, c1 = std::min(down.cols(), c0 + kb);
      for (int32_t g = c0 / gr; g * gr < c1; ++g)
        up.run_group(kernels, g, xt, panel + static_cast<int64_t>(g * gr - c0) * kTileTokens, n, act);
      // Rows past the last column inside its 4-block must read as zeros, not as an earlier block's values.
      const int32_t rows = c1 - c0;
      if (rows % 4 != 0)
        std::memset(panel + static_cast<int64_t>(rows) * kTileTokens, 0,
                    static_cast<std::size_t>(4 - rows % 4) * kTileTokens * sizeof(float));
      down.run_kblock(kernels, b, panel, yt, n, xt);
    }
  });
}

}  // namespace sparsebert
