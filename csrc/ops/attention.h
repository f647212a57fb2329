// Multi-head self-attention over the fused QKV activations, one (sequence, head) pair per task.
#pragma once

#include <cstdint>
#include <vector>

#include "common/aligned_buffer.h"
#include "common/tile_matrix.h"
#include "kernels/kernels.h"

namespace sparsebert {

class ThreadPool;

// Per-thread work space for one (sequence, head): Q, K and V [dh][ld], scores/probabilities [seq][ld], context
// [dh][ld], with ld = seq rounded up to 16 so kernels may touch whole vectors.
struct AttentionScratch {
  void resize(int32_t seq, int32_t head_dim);
  int32_t ld = 0;
  AlignedBuffer<float> q, k, v, p, ctx;
};

struct AttentionShape {
  int32_t batch, seq, heads, head_dim;
};

// qkv: 3H x (batch*seq) with rows Q (h*dh + d), K (H + ...), V (2H + ...). keep: batch*seq flags, 1 where the
// attention mask keeps the key. ctx (H x batch*seq) receives softmax(Q K^T / sqrt(dh), masked) V per head.
// A sequence whose mask keeps no key attends uniformly over all its positions, as PyTorch's additive
// finfo.min mask does.
void multi_head_attention(const KernelTable& kernels, ThreadPool& pool, const AttentionShape& shape,
                          const TileMatrix& qkv, const uint8_t* keep, std::vector<AttentionScratch>& scratch,
                          TileMatrix& ctx);

}  // namespace sparsebert
