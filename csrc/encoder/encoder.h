// The BERT encoder graph: embeddings -> N x (fused QKV -> attention -> output projection + residual + LayerNorm
// -> FFN up + activation -> FFN down + residual + LayerNorm) -> optional pooler and head.
#pragma once

#include <atomic>
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "common/aligned_buffer.h"
#include "common/tile_matrix.h"
#include "common/thread_pool.h"
#include "encoder/encoder_spec.h"
#include "encoder/masked_lm.h"
#include "kernels/kernels.h"
#include "ops/attention.h"
#include "ops/embedding.h"
#include "ops/layer_norm.h"
#include "ops/packed_linear.h"

namespace sparsebert {

// Choices the caller makes for an engine. Only bf16_attention changes results; the others are speed only.
struct EncoderOptions {
  bool fuse_ffn = true;  // FFN up and down as one op where they chain (ops/fused_ffn.h); false for measuring
  // Attention's two products in bf16 with fp32 sums (kernels/bf16.h): faster, less precise. Needs the avx512 path
  // and AMX (std::invalid_argument otherwise, saying what is missing).
  bool bf16_attention = false;
  // Tokens per chunk of a call: a larger batch runs chunk by chunk (whole sequences), which bounds the working
  // memory whatever the batch; and scratch grown past kKeepScratchTokens is freed when the call ends.
  int32_t max_batch_tokens = kDefaultMaxBatchTokens;
};

struct EncoderLayer {
  // Attention heads and FFN neurons this layer kept (structured compaction may remove some): qkv is
  // [3 * heads * head_dim, H], attn_out [H, heads * head_dim], ffn_up [intermediate, H], ffn_down [H, intermediate].
  int32_t heads = 0, intermediate = 0;
  std::shared_ptr<const PackedLinear> qkv, attn_out, ffn_up, ffn_down;
  LayerNormWeights attn_ln, ffn_ln;
  bool ffn_fused = false;  // set by the Encoder: FFN up and down run as one op (ops/fused_ffn.h)
};

// One output array: shape and row-major float data.
struct Output {
  std::vector<int64_t> shape;
  std::vector<float> data;
};

// Wall time in milliseconds of each op of one call, summed over layers and chunks, in first-seen order.
using Profile = std::vector<std::pair<std::string, double>>;

// Thrown by run() when its cancel flag is set: the call stops between two layers, the engine stays usable.
class Cancelled : public std::exception {
 public:
  const char* what() const noexcept override { return "run cancelled"; }
};

// Where a masked-LM head computes its logits: at every token (logits [batch, seq, vocab]), or at `count` chosen
// (batch, position) pairs, `pairs` holding 2 * count values (logits [count, vocab], in the pairs' order).
struct LogitsAt {
  const int32_t* pairs = nullptr;
  int64_t count = 0;
};

// Token tiles per thread in a group of the unfused FFN (ops/tiled_ffn.h): one, so that its intermediate (3072 x 64
// floats per tile on BERT-base) costs no more memory than the fused FFN's panels.
constexpr int32_t kFfnGroupTilesPerThread = 1;

class Encoder {
 public:
  // Takes ownership of fully validated weights (encoder/builder.h checks names and shapes).
  Encoder(EncoderConfig config, EmbeddingTables embeddings, std::vector<EncoderLayer> layers,
          std::shared_ptr<const PackedLinear> pooler, std::shared_ptr<const PackedLinear> head_linear,
          std::unique_ptr<MaskedLmHead> masked_lm, int num_threads, const std::string& isa,
          const EncoderOptions& options);
  ~Encoder();
  Encoder(const Encoder&) = delete;
  Encoder& operator=(const Encoder&) = delete;

  // Inputs are batch*seq row-major values. They are copied first and the copies checked (std::invalid_argument)
  // and used, so a caller that changes its arrays during the call cannot make a kernel read out of bounds.
  // With hidden_states, the output also holds "hidden_states" [layers + 1, batch, seq, hidden]: the embeddings'
  // output, then each layer's (the last is last_hidden_state), as transformers' output_hidden_states.
  // `profile`, when given, receives this call's op timings; `cancel`, when given, is polled between layers and
  // chunks (Cancelled). `logits_at`, for a masked-LM head only, limits its logits to chosen tokens (copied and
  // checked like the inputs). Concurrent calls are serialised.
  std::map<std::string, Output> run(const int32_t* input_ids, const int32_t* attention_mask,
                                    const int32_t* token_type_ids, int32_t batch, int32_t seq,
                                    bool hidden_states = false, Profile* profile = nullptr,
                                    const std::atomic<bool>* cancel = nullptr, const LogitsAt* logits_at = nullptr);

  const std::string& isa() const { return isa_; }
  bool bf16_attention() const { return bf16_ != nullptr; }
  int num_threads() const { return pool_.size(); }
  int32_t max_batch_tokens() const { return max_batch_tokens_; }
  const EncoderConfig& config() const { return config_; }

 private:
  struct Scratch;
  class Timer;

  void check_inputs(const Scratch& s, int64_t tokens) const;
  // Copies and checks the chosen pairs into s (s.picks, s.pick_order); false when every token is wanted.
  bool take_logits_at(Scratch& s, const LogitsAt* logits_at, int32_t batch, int32_t seq) const;
  std::map<std::string, Output> allocate_outputs(int32_t batch, int32_t seq, bool hidden_states,
                                                 int64_t picks) const;
  // The masked-LM logits of the chunk's tokens the call wants.
  void masked_lm(Scratch& s, int32_t b0, int32_t count, int32_t seq, Output& logits);
  // Sequences [b0, b0 + count) of the call, from the inputs copied into s, written into their slices of `out`.
  void run_chunk(Scratch& s, int32_t b0, int32_t count, int32_t seq, std::map<std::string, Output>& out,
                 Timer& timer, const std::atomic<bool>* cancel);
  void ffn(const EncoderLayer& layer, Scratch& s, Timer& timer);

  EncoderConfig config_;
  EmbeddingTables embeddings_;
  std::vector<EncoderLayer> layers_;
  std::shared_ptr<const PackedLinear> pooler_, head_linear_;
  std::unique_ptr<MaskedLmHead> masked_lm_;
  std::string isa_;
  const KernelTable& kernels_;
  const Bf16Kernels* bf16_;  // null: attention in fp32
  ThreadPool pool_;
  int32_t max_batch_tokens_;

  // run_mutex_ serialises runs over one set of scratch buffers. Both are replaced in a forked child (a thread that
  // does not exist there may have held the lock, or been changing the buffers): common/after_fork.h.
  std::unique_ptr<std::mutex> run_mutex_;
  std::unique_ptr<Scratch> scratch_;
};

}  // namespace sparsebert
