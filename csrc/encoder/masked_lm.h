// The masked-LM head of BertForMaskedLM / BertForPreTraining, RobertaForMaskedLM and DistilBertForMaskedLM:
// a transform (dense H x H + activation + LayerNorm), then the decoder to the vocabulary with its bias. The
// decoder is the word embedding table in these checkpoints (tied), borrowed from the embeddings rather than
// stored twice; a checkpoint whose decoder differs brings a linear of its own.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "common/aligned_buffer.h"
#include "common/tile_matrix.h"
#include "kernels/kernels.h"
#include "ops/layer_norm.h"
#include "ops/packed_linear.h"

namespace sparsebert {

class ThreadPool;

struct MaskedLmHead {
  std::shared_ptr<const PackedLinear> transform;  // [H, H]
  Activation act = Activation::kGelu;
  LayerNormWeights norm;
  float eps = 1e-12f;
  AlignedBuffer<float> tied_bias;                 // [vocab], with the tied decoder
  std::shared_ptr<const PackedLinear> decoder;    // [vocab, H] with its bias; null when tied
};

// Working buffers of the head, kept across calls like the encoder's other scratch.
struct MaskedLmScratch {
  TileMatrix picked, transformed, logits;
  LinearScratch linear;
};

// The logits of tokens tokens[i] of `hidden` (token indices within it) into out + rows[i] * vocab, for every i.
// word_embeddings ([vocab][H] row-major) is the decoder's weight when the head is tied. The decoder runs one token
// tile at a time, so its working set is vocab x 64 floats whatever the number of tokens.
void masked_lm_logits(const KernelTable& kernels, ThreadPool& pool, const MaskedLmHead& head,
                      const float* word_embeddings, int32_t vocab, const TileMatrix& hidden,
                      const std::vector<int32_t>& tokens, const std::vector<int64_t>& rows, float* out,
                      MaskedLmScratch& scratch);

}  // namespace sparsebert
