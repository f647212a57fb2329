// One (sequence, head) of attention with bf16 products (ops/attention.h, kernels/bf16.h). The operands are packed
// in the layouts the bf16 product takes, with sizes rounded up to its tiles (16 rows or columns, 32 along the
// sums); the padding is zero, so it adds nothing:
//   scores^T[j][i] = sum_d K^T[j][d] Q[d][i]   K^T in rows [seq16][dim32], Q in pairs [dim32 / 2][seq16]
//   ctx[d][i]      = sum_j V[d][j] P[j][i]     V in rows [dim16][seq32],   P in pairs [seq32 / 2][seq16]
// The softmax between them is fp32 attention's, its probabilities rounded to bf16 pairs as it stores them.
#include "ops/attention.h"

namespace sparsebert {

void attend_bf16(const Bf16Kernels& bf16, const AttentionShape& s,
                 const TileMatrix& qkv, int32_t b, int32_t h, const uint8_t* keys, float scale, AttentionScratch& sc,
                 TileMatrix& ctx) {
  const int32_t hidden = s.heads * s.head_dim, t0 = b * s.seq;
  const int32_t q_row = h * s.head_dim, k_row = hidden + h * s.head_dim, v_row = 2 * hidden + h * s.head_dim;
  const int32_t seq16 = sc.ld, seq32 = (s.seq + 31) / 32 * 32;
  const int32_t dim16 = (s.head_dim + 15) / 16 * 16, dim32 = (s.head_dim + 31) / 32 * 32;
  // The sequence's tokens lie in one or more token tiles: pack each piece from its tile.
  for_each_tile_piece(t0, s.seq, [&](int32_t tile_index, int32_t lane, int32_t i, int32_t run) {
    const float* tile = qkv.tile(tile_index) + lane;
    bf16.pack_pairs(s.head_dim, run, tile + q_row * kTileTokens, kTileTokens, sc.q_pairs.data() + 2 * i, 2 * seq16);
    bf16.pack_transposed(s.head_dim, run, tile + k_row * kTileTokens, kTileTokens, sc.k_rows.data() + i * dim32,
                         dim32);
    bf16.pack_rows(s.head_dim, run, tile + v_row * kTileTokens, kTileTokens, sc.v_rows.data() + i, seq32);
  });
  bf16.gemm(seq16, seq16, dim32, sc.k_rows.data(), dim32, sc.q_pairs.data(), 2 * seq16, sc.p.data(), seq16);
  bf16.softmax_pairs(s.seq, s.seq, sc.p.data(), seq16, scale, keys, sc.p_pairs.data(), 2 * seq16);
  if (s.seq % kTileTokens == 0 && s.head_dim % 16 == 0) {
    // Whole tiles and whole 16-row blocks: the context goes straight into its tiles, one 64-query piece at a time.
    for (int32_t i = 0; i < s.seq; i += kTileTokens)
      bf16.gemm(s.head_dim, kTileTokens, seq32, sc.v_rows.data(), seq32, sc.p_pairs.data() + 2 * i, 2 * seq16,
                ctx.tile((t0 + i) / kTileTokens) + q_row * kTileTokens, kTileTokens);
    return;
  }
  bf16.gemm(dim16, seq16, seq32, sc.v_rows.data(), seq32, sc.p_pairs.data(), 2 * seq16, sc.ctx.data(), seq16);
  scatter_rows(sc.ctx.data(), seq16, q_row, s.head_dim, t0, s.seq, ctx);
}

}  // namespace sparsebert
