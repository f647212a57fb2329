// The BERT encoder graph: embeddings -> N x (fused QKV -> attention -> output projection + residual + LayerNorm
// -> FFN up + activation -> FFN down + residual + LayerNorm) -> optional pooler and head.
#pragma once

#include <chrono>
#include <cstdint>
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
#include "kernels/kernels.h"
#include "ops/attention.h"
#include "ops/embedding.h"
#include "ops/layer_norm.h"
#include "ops/packed_linear.h"

namespace sparsebert {

// Choices the caller makes for an engine; none changes a result, bit for bit.
struct EncoderOptions {
  bool fuse_ffn = true;  // FFN up and down as one op where they chain (ops/fused_ffn.h); false for measuring
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

class Encoder {
 public:
  // Takes ownership of fully validated weights (encoder/builder.h checks names and shapes).
  Encoder(EncoderConfig config, EmbeddingTables embeddings, std::vector<EncoderLayer> layers,
          std::shared_ptr<const PackedLinear> pooler, std::shared_ptr<const PackedLinear> head_linear,
          int num_threads, const std::string& isa, const EncoderOptions& options);

  // Inputs are batch*seq row-major values. They are copied first and the copies checked (std::invalid_argument)
  // and used, so a caller that changes its arrays during the call cannot make a kernel read out of bounds.
  // With hidden_states, the output also holds "hidden_states" [layers + 1, batch, seq, hidden]: the embeddings'
  // output, then each layer's (the last is last_hidden_state), as transformers' output_hidden_states.
  std::map<std::string, Output> run(const int32_t* input_ids, const int32_t* attention_mask,
                                    const int32_t* token_type_ids, int32_t batch, int32_t seq,
                                    bool hidden_states = false);

  // When on, run() records the wall time of each op (summed over layers) into last_profile().
  void set_profiling(bool on) { profiling_ = on; }
  bool profiling() const { return profiling_; }
  std::vector<std::pair<std::string, double>> last_profile() const;

  const std::string& isa() const { return isa_; }
  int num_threads() const { return pool_.size(); }
  const EncoderConfig& config() const { return config_; }

 private:
  void check_inputs(int32_t batch, int32_t seq) const;
  // Adds the time since the previous mark to `op` when profiling.
  void mark(const char* op);

  EncoderConfig config_;
  EmbeddingTables embeddings_;
  std::vector<EncoderLayer> layers_;
  std::shared_ptr<const PackedLinear> pooler_, head_linear_;
  std::string isa_;
  const KernelTable& kernels_;
  ThreadPool pool_;

  // Scratch reused across runs (grown, never shrunk); run_mutex_ serialises runs that share it.
  std::mutex run_mutex_;
  TileMatrix hidden_, qkv_, ctx_, attn_, ffn_, cls_, pooled_, head_out_;
  std::vector<AttentionScratch> attention_scratch_;
  std::vector<AlignedBuffer<float>> ffn_panels_;
  std::vector<int32_t> ids_, types_, positions_;
  std::vector<uint8_t> keep_;

  bool profiling_ = false;
  std::vector<std::pair<std::string, double>> profile_;  // op -> milliseconds, in first-seen order
  std::chrono::steady_clock::time_point last_mark_;
};

}  // namespace sparsebert
