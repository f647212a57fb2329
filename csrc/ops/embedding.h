// BERT embeddings: word + token type + absolute position, then LayerNorm.
#pragma once

#include <cstdint>

#include "common/aligned_buffer.h"
#include "common/tile_matrix.h"
#include "kernels/kernels.h"

namespace sparsebert {

class ThreadPool;

struct EmbeddingTables {
  int32_t hidden = 0, vocab = 0, positions = 0, token_types = 0;
  float eps = 1e-12f;
  AlignedBuffer<float> word, position, token_type, gamma, beta;  // [vocab][H], [positions][H], [types][H], [H]
};

// ids and types are batch*seq values already checked to be in range; out becomes H x batch*seq.
void embed(const KernelTable& kernels, ThreadPool& pool, const EmbeddingTables& tables, const int32_t* ids,
           const int32_t* types, int32_t batch, int32_t seq, TileMatrix& out);

}  // namespace sparsebert
