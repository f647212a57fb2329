#include "ops/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <initializer_list>

#include "common/thread_pool.h"

namespace sparsebert {

void AttentionScratch::resize(int32_t seq, int32_t head_dim, bool bf16) {
  const int32_t new_ld = (seq + 15) / 16 * 16;
  const std::size_t dim16 = (head_dim + 15) / 16 * 16, dim32 = (head_dim + 31) / 32 * 32;
  const std::size_t seq16 = new_ld, seq32 = (seq + 31) / 32 * 32;
  ld = new_ld;
  q.ensure(head_dim * seq16);
  k.ensure(head_dim * seq16);
  v.ensure(head_dim * seq16);
  // The bf16 product writes whole 16-row tiles of scores and context.
  p.ensure((bf16 ? seq16 : seq) * seq16);
  ctx.ensure((bf16 ? dim16 : head_dim) * seq16);
  if (!bf16) return;
  k_rows.ensure(seq16 * dim32);
  q_pairs.ensure(dim32 * seq16);
  p_pairs.ensure(seq32 * seq16);
  v_rows.ensure(dim16 * seq32);
  if (bf16_seq != seq || bf16_head_dim != head_dim) {
    // Each head writes the same cells for one shape; the rest, padding the products' operands, must be zero.
    for (AlignedBuffer<uint16_t>* b : {&k_rows, &q_pairs, &p_pairs, &v_rows}) std::memset(b->data(), 0, b->size() * 2);
    bf16_seq = seq;
    bf16_head_dim = head_dim;
  }
}

void gather_rows(const TileMatrix& src, int32_t row0, int32_t count, int32_t t0, int32_t seq, float* dst,
                 int64_t ld) {
  for_each_tile_piece(t0, seq, [&](int32_t tile, int32_t lane, int32_t i, int32_t run) {
    const float* from = src.tile(tile) + lane;
    for (int32_t d = 0; d < count; ++d)
      std::memcpy(dst + d * ld + i, from + static_cast<int64_t>(row0 + d) * kTileTokens, run * sizeof(float));
  });
}

void scatter_rows(const float* src, int64_t ld, int32_t row0, int32_t count, int32_t t0, int32_t seq,
                  TileMatrix& dst) {
  for_each_tile_piece(t0, seq, [&](int32_t tile, int32_t lane, int32_t i, int32_t run) {
    float* to = dst.tile(tile) + lane;
    for (int32_t d = 0; d < count; ++d)
      std::memcpy(to + static_cast<int64_t>(row0 + d) * kTileTokens, src + d * ld + i, run * sizeof(float));
  });
}

void multi_head_attention(const KernelTable& kernels, const Bf16Kernels* bf16, ThreadPool& pool,
                          const AttentionShape& s, const TileMatrix& qkv, const uint8_t* keep,
                          std::vector<AttentionScratch>& scratch, TileMatrix& ctx) {
  const int32_t hidden = s.heads * s.head_dim;
  ctx.resize(hidden, s.batch * s.seq);
  scratch.resize(pool.size());
  for (auto& sc : scratch) sc.resize(s.seq, s.head_dim, bf16 != nullptr);
  std::vector<uint8_t> all_keys(s.seq, 1);
  const float scale = 1.0f / std::sqrt(static_cast<float>(s.head_dim));

  // When every sequence fills whole token tiles, the GEMMs read Q, K, V from the tiles and write the context
  // into them directly, one 64-token piece at a time: no gathers, no scatter (a quarter of the attention time).
  const bool whole_tiles = s.seq % kTileTokens == 0;
  pool.parallel_for(s.batch * s.heads, [&](int task, int thread) {
    const int32_t b = task / s.heads, h = task % s.heads, t0 = b * s.seq;
    AttentionScratch& sc = scratch[thread];
    const uint8_t* seq_keep = keep + t0;
    bool any = false;
    for (int32_t j = 0; j < s.seq && !any; ++j) any = seq_keep[j] != 0;
    // With every key masked, PyTorch's additive mask makes all scores equal: uniform weights. Scale 0 over all
    // keys reproduces that.
    const uint8_t* keys = any ? seq_keep : all_keys.data();
    const float key_scale = any ? scale : 0.0f;
    if (bf16) return attend_bf16(*bf16, s, qkv, b, h, keys, key_scale, sc, ctx);
    const int64_t ld = sc.ld;
    const Epilogue none;
    const int32_t q_row = h * s.head_dim, k_row = hidden + h * s.head_dim, v_row = 2 * hidden + h * s.head_dim;
    const int32_t pieces = s.seq / kTileTokens, tile0 = t0 / kTileTokens;
    if (whole_tiles) {
      // scores^T[j][i] = K_j . Q_i, one (key piece, query piece) block at a time.
      for (int32_t kp = 0; kp < pieces; ++kp)
        for (int32_t qp = 0; qp < pieces; ++qp)
          kernels.gemm_wt(kTileTokens, kTileTokens, s.head_dim, qkv.tile(tile0 + kp) + k_row * kTileTokens,
                          kTileTokens, qkv.tile(tile0 + qp) + q_row * kTileTokens, kTileTokens,
                          sc.p.data() + kp * kTileTokens * ld + qp * kTileTokens, ld, none);
    } else {
      gather_rows(qkv, q_row, s.head_dim, t0, s.seq, sc.q.data(), ld);
      gather_rows(qkv, k_row, s.head_dim, t0, s.seq, sc.k.data(), ld);
      gather_rows(qkv, v_row, s.head_dim, t0, s.seq, sc.v.data(), ld);
      // scores^T[j][i] = K_j . Q_i: one row per key, so the softmax runs down columns with queries vectorised.
      // K is stored [dh][seq] like Q; gemm_wt reads it as the transposed W, so no transpose is needed.
      kernels.gemm_wt(s.seq, s.seq, s.head_dim, sc.k.data(), ld, sc.q.data(), ld, sc.p.data(), ld, none);
    }
    kernels.softmax_cols(s.seq, s.seq, sc.p.data(), ld, key_scale, keys);
    // context[d][i] = sum_j V[d][j] P[j][i]
    if (whole_tiles) {
      // Key pieces in order, each adding to the last: the same sums in the same order as one long GEMM.
      Epilogue add;
      add.accumulate = true;
      for (int32_t qp = 0; qp < pieces; ++qp)
        for (int32_t kp = 0; kp < pieces; ++kp)
          kernels.gemm(s.head_dim, kTileTokens, kTileTokens, qkv.tile(tile0 + kp) + v_row * kTileTokens,
                       kTileTokens, sc.p.data() + kp * kTileTokens * ld + qp * kTileTokens, ld,
                       ctx.tile(tile0 + qp) + q_row * kTileTokens, kTileTokens, kp == 0 ? none : add);
    } else {
      kernels.gemm(s.head_dim, s.seq, s.seq, sc.v.data(), ld, sc.p.data(), ld, sc.ctx.data(), ld, none);
      scatter_rows(sc.ctx.data(), ld, q_row, s.head_dim, t0, s.seq, ctx);
    }
  });
}

}  // namespace sparsebert
