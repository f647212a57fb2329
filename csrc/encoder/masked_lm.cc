#include "encoder/masked_lm.h"

#include <algorithm>

#include "common/thread_pool.h"

namespace sparsebert {
namespace {

// Decoder rows of one tile shared among the threads by the word embeddings (tied decoder): a dense GEMM
// straight on the embedding table, rows split evenly.
void tied_decoder(const KernelTable& kernels, ThreadPool& pool, const float* weight, const float* bias, int32_t vocab,
                  const TileView& x, const TileView& y) {
  const int32_t hidden = x.features(), n = x.tokens_in_tile(0);
  const int chunks = pool.size();
  pool.parallel_for_static(chunks, [&](int chunk, int) {
    const auto r0 = static_cast<int32_t>(static_cast<int64_t>(vocab) * chunk / chunks);
    const auto r1 = static_cast<int32_t>(static_cast<int64_t>(vocab) * (chunk + 1) / chunks);
    if (r0 >= r1) return;
    Epilogue ep;
    ep.bias = bias + r0;
    kernels.gemm(r1 - r0, n, hidden, weight + static_cast<int64_t>(r0) * hidden, hidden, x.tile(0), kTileTokens,
                 y.tile(0) + static_cast<int64_t>(r0) * kTileTokens, kTileTokens, ep);
  });
}

}  // namespace

void masked_lm_logits(const KernelTable& kernels, ThreadPool& pool, const MaskedLmHead& head,
                      const float* word_embeddings, int32_t vocab, const TileMatrix& hidden,
                      const std::vector<int32_t>& tokens, const std::vector<int64_t>& rows, float* out,
                      MaskedLmScratch& s) {
  const auto count = static_cast<int32_t>(tokens.size());
  if (count == 0) return;
  const int32_t features = hidden.features();
  s.picked.resize(features, count);
  for (int32_t i = 0; i < count; ++i)
    for (int32_t f = 0; f < features; ++f) s.picked.at(f, i) = hidden.at(f, tokens[i]);
  head.transform->forward(kernels, pool, s.picked, s.transformed, head.act, nullptr, &s.linear);
  layer_norm(kernels, pool, head.norm, head.eps, s.transformed);

  s.logits.resize(vocab, std::min(count, kTileTokens));
  for (int32_t tile = 0; tile < s.transformed.num_tiles(); ++tile) {
    const TileView x = s.transformed.view(tile, 1);
    const TileView y = s.logits.view(0, 1);
    const TileView logits(y.tile(0), vocab, static_cast<int32_t>(s.logits.rows()), x.tokens());
    if (head.decoder)
      head.decoder->forward(kernels, pool, x, logits, Activation::kNone, nullptr, &s.linear);
    else
      tied_decoder(kernels, pool, word_embeddings, head.tied_bias.data(), vocab, x, logits);
    // Token-major rows of the output, each token's from its lane of the tile.
    const int32_t first = tile * kTileTokens;
    pool.parallel_for_static(x.tokens(), [&](int lane, int) {
      float* dst = out + rows[first + lane] * vocab;
      const float* src = logits.tile(0) + lane;
      for (int32_t v = 0; v < vocab; ++v) dst[v] = src[static_cast<int64_t>(v) * kTileTokens];
    });
  }
}

}  // namespace sparsebert
