// BERT-family embeddings: word + token type + position, then LayerNorm.
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

// ids, types and positions are `tokens` values already checked to be in range; out becomes H x tokens.
void embed(const KernelTable& kernels, ThreadPool& pool, const EmbeddingTables& tables, const int32_t* ids,
           const int32_t* types, const int32_t* positions, int32_t tokens, TileMatrix& out);

}  // namespace sparsebert
