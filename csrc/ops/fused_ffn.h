// The feed-forward block, FFN up (+ activation) then FFN down (+ residual), run one token tile at a time with the
// intermediate activations kept in a small per-thread panel instead of a [intermediate x tokens] matrix.
//
// FFN down reads its input one K-block (a range of intermediate features) at a time; FFN up, being much taller
// than wide, is packed in row groups of consecutive rows. When every K-block of FFN down is a whole number of
// FFN-up row groups, each block's input can be computed just before it is consumed: the panel (K-block x 64
// tokens, 32-128 KiB) stays in L1/L2, where the unfused pair writes 768 KiB per tile and reads it back.
#pragma once

#include <cstdint>
#include <vector>

#include "common/aligned_buffer.h"
#include "common/tile_matrix.h"
#include "kernels/kernels.h"
#include "ops/packed_linear.h"

namespace sparsebert {

class ThreadPool;

// Whether this pair of layers can run fused: both sparse, shapes chained (up: [I, H], down: [H, I]), and every
// K-block of `down` made of whole row groups of `up`.
bool ffn_fusable(const PackedLinear& up, const PackedLinear& down);

// y = down(act(up(x))) + x, tile by tile on the pool's static schedule (every thread keeps the tiles it
// produced). Needs ffn_fusable(up, down); scratch holds one panel per thread and is grown here.
void fused_ffn(const KernelTable& kernels, ThreadPool& pool, const PackedLinear& up, const PackedLinear& down,
               Activation act, const TileMatrix& x, TileMatrix& y, std::vector<AlignedBuffer<float>>& scratch);

}  // namespace sparsebert
