// LayerNorm over the features of every token, in place, tile by tile on the pool's static schedule.
#pragma once

#include "common/aligned_buffer.h"
#include "common/tile_matrix.h"
#include "kernels/kernels.h"

namespace sparsebert {

class ThreadPool;

struct LayerNormWeights {
  AlignedBuffer<float> gamma, beta;  // one value per feature
};

void layer_norm(const KernelTable& kernels, ThreadPool& pool, const LayerNormWeights& weights, float eps,
                TileMatrix& x);

}  // namespace sparsebert
