// The feed-forward block, FFN up (+ activation) then FFN down (+ residual), run a group of token tiles at a time
// when the two layers cannot be fused (ops/fused_ffn.h: int8 layers, unfusable shapes, tiles that do not share
// out evenly among the threads). The [intermediate x tokens] matrix then exists for one group only, so the
// working memory per token is that of the fused FFN: nothing.
#pragma once

#include "common/tile_matrix.h"
#include "kernels/kernels.h"
#include "ops/packed_linear.h"

namespace sparsebert {

class ThreadPool;

// What the op keeps between calls: one group's intermediate tiles, and the linears' own buffers.
struct TiledFfnScratch {
  TileMatrix mid;
  LinearScratch linear;
};

// y = down(act(up(x))) + x, group by group of `group_tiles` tiles, in place on views of x and y (no copies);
// y is resized to down.rows() x x.tokens(). Each output row is summed in the same order as by one ungrouped
// call, so the result is bit-identical.
void tiled_ffn(const KernelTable& kernels, ThreadPool& pool, const PackedLinear& up, const PackedLinear& down,
               Activation act, const TileMatrix& x, TileMatrix& y, int32_t group_tiles, TiledFfnScratch& scratch);

}  // namespace sparsebert
