// Multi-head self-attention over the fused QKV activations, one (sequence, head) pair per task.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "common/aligned_buffer.h"
#include "common/tile_matrix.h"
#include "kernels/bf16.h"
#include "kernels/kernels.h"

namespace sparsebert {

class ThreadPool;

// Per-thread work space for one (sequence, head): Q, K and V [dh][ld], scores/probabilities [ld][ld], context
// [round_up(dh, 16)][ld], with ld = seq rounded up to 16 so kernels may touch whole vectors; for bf16 attention
// also the bf16 operands (ops/attention_bf16.cc), whose padding must stay zero.
struct AttentionScratch {
  void resize(int32_t seq, int32_t head_dim, bool bf16);
  int32_t ld = 0;
  AlignedBuffer<float> q, k, v, p, ctx;
  AlignedBuffer<uint16_t> k_rows, q_pairs, p_pairs, v_rows;
  int32_t bf16_seq = 0, bf16_head_dim = 0;  // the shape the bf16 buffers were zeroed for
};

struct AttentionShape {
  int32_t batch, seq, heads, head_dim;
};

// qkv: 3H x (batch*seq) with rows Q (h*dh + d), K (H + ...), V (2H + ...). keep: batch*seq flags, 1 where the
// attention mask keeps the key. ctx (H x batch*seq) receives softmax(Q K^T / sqrt(dh), masked) V per head.
// A sequence whose mask keeps no key attends uniformly over all its positions, as PyTorch's additive
// finfo.min mask does. With `bf16` kernels, the two products take bf16 operands (Q, K, V and the probabilities
// rounded to bf16, sums in fp32); without, everything is fp32.
void multi_head_attention(const KernelTable& kernels, const Bf16Kernels* bf16, ThreadPool& pool,
                          const AttentionShape& shape, const TileMatrix& qkv, const uint8_t* keep,
                          std::vector<AttentionScratch>& scratch, TileMatrix& ctx);

// One (sequence b, head h) with bf16 products: scores from Q and K, softmax over `keys` (scaled by `scale`), and
// the context written into ctx.
void attend_bf16(const Bf16Kernels& bf16, const AttentionShape& shape,
                 const TileMatrix& qkv, int32_t b, int32_t h, const uint8_t* keys, float scale, AttentionScratch& sc,
                 TileMatrix& ctx);

// Calls f(tile, lane, i, run) for each piece of tokens [t0, t0 + seq) that lies in one token tile: tokens
// t0 + i .. t0 + i + run - 1 are lanes lane .. lane + run - 1 of tile `tile`.
template <class F>
void for_each_tile_piece(int32_t t0, int32_t seq, F&& f) {
  for (int32_t i = 0; i < seq;) {
    const int32_t t = t0 + i, lane = t % kTileTokens, run = std::min(kTileTokens - lane, seq - i);
    f(t / kTileTokens, lane, i, run);
    i += run;
  }
}

// Copies rows [row0, row0 + count) of tokens [t0, t0 + seq) of the tiles into dst[count][ld], and back.
void gather_rows(const TileMatrix& src, int32_t row0, int32_t count, int32_t t0, int32_t seq, float* dst,
                 int64_t ld);
void scatter_rows(const float* src, int64_t ld, int32_t row0, int32_t count, int32_t t0, int32_t seq,
                  TileMatrix& dst);

}  // namespace sparsebert
