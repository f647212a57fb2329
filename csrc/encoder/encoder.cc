#include "encoder/encoder.h"

#include <stdexcept>
#include <utility>

#include "kernels/dispatch.h"
#include "ops/fused_ffn.h"

namespace sparsebert {
namespace {

void require(bool ok, const std::string& message) {
  if (!ok) throw std::invalid_argument(message);
}

// Token-major copy [tokens][features] of a tile matrix.
void copy_out(const TileMatrix& m, float* out) {
  const int32_t f_count = m.features();
  for (int32_t tile = 0; tile < m.num_tiles(); ++tile) {
    const float* src = m.tile(tile);
    const int32_t n = m.tokens_in_tile(tile);
    for (int32_t lane = 0; lane < n; ++lane) {
      float* dst = out + static_cast<int64_t>(tile * kTileTokens + lane) * f_count;
      for (int32_t f = 0; f < f_count; ++f) dst[f] = src[static_cast<int64_t>(f) * kTileTokens + lane];
    }
  }
}

}  // namespace

Encoder::Encoder(EncoderConfig config, EmbeddingTables embeddings, std::vector<EncoderLayer> layers,
                 std::shared_ptr<const PackedLinear> pooler, std::shared_ptr<const PackedLinear> head_linear,
                 int num_threads, const std::string& isa, const EncoderOptions& options)
    : config_(config),
      embeddings_(std::move(embeddings)),
      layers_(std::move(layers)),
      pooler_(std::move(pooler)),
      head_linear_(std::move(head_linear)),
      isa_(isa),
      kernels_(kernels_for(isa)),
      pool_(num_threads) {
  for (EncoderLayer& layer : layers_)
    layer.ffn_fused = options.fuse_ffn && ffn_fusable(*layer.ffn_up, *layer.ffn_down);
}

void Encoder::check_inputs(int32_t batch, int32_t seq) const {
  const int64_t n = static_cast<int64_t>(batch) * seq;
  for (int64_t t = 0; t < n; ++t) {
    require(ids_[t] >= 0 && ids_[t] < config_.vocab,
            "input_ids value " + std::to_string(ids_[t]) + " is outside [0, " + std::to_string(config_.vocab) + ")");
    require(types_[t] >= 0 && types_[t] < config_.type_vocab,
            "token_type_ids value " + std::to_string(types_[t]) + " is outside [0, " +
                std::to_string(config_.type_vocab) + ")");
    require(keep_[t] <= 1, "attention_mask values must be 0 or 1");
  }
}

std::map<std::string, Output> Encoder::run(const int32_t* input_ids, const int32_t* attention_mask,
                                           const int32_t* token_type_ids, int32_t batch, int32_t seq,
                                           bool hidden_states) {
  require(batch > 0 && seq > 0, "inputs have shape [" + std::to_string(batch) + ", " + std::to_string(seq) +
                                    "]: batch and sequence length must be at least 1");
  require(seq <= config_.max_sequence(),
          "sequence length " + std::to_string(seq) + " exceeds the longest this model accepts (" +
              std::to_string(config_.max_sequence()) + ", from its position embeddings)");
  require(static_cast<int64_t>(batch) * seq <= kMaxTokens,
          "inputs hold " + std::to_string(static_cast<int64_t>(batch) * seq) + " tokens; one call takes at most " +
              std::to_string(kMaxTokens));
  std::lock_guard<std::mutex> lock(run_mutex_);
  const int32_t tokens = batch * seq;
  const int32_t hidden = config_.hidden;
  ids_.assign(input_ids, input_ids + tokens);
  types_.assign(token_type_ids, token_type_ids + tokens);
  // A mask value other than 0 and 1 becomes 2, which the check refuses (a byte cast could wrap it into range).
  keep_.resize(tokens);
  for (int32_t t = 0; t < tokens; ++t) keep_[t] = attention_mask[t] == 0 ? 0 : attention_mask[t] == 1 ? 1 : 2;
  check_inputs(batch, seq);

  if (profiling_) {
    profile_.clear();
    last_mark_ = std::chrono::steady_clock::now();
  }
  positions_.resize(tokens);
  for (int32_t b = 0; b < batch; ++b) {
    int32_t* pos = positions_.data() + static_cast<int64_t>(b) * seq;
    const int32_t* ids = ids_.data() + static_cast<int64_t>(b) * seq;
    if (!config_.positions_from_ids) {
      for (int32_t s = 0; s < seq; ++s) pos[s] = s;
      continue;
    }
    int32_t rank = 0;  // check_inputs bounds seq, so pad_token_id + rank < max_positions
    for (int32_t s = 0; s < seq; ++s)
      pos[s] = ids[s] == config_.pad_token_id ? config_.pad_token_id : config_.pad_token_id + ++rank;
  }
  embed(kernels_, pool_, embeddings_, ids_.data(), types_.data(), positions_.data(), tokens, hidden_);
  mark("embeddings");
  std::map<std::string, Output> out;
  float* states = nullptr;  // the next [batch, seq, hidden] slot of "hidden_states"
  const std::size_t state_size = static_cast<std::size_t>(tokens) * hidden;
  if (hidden_states) {
    Output& all = out["hidden_states"];
    all.shape = {static_cast<int64_t>(layers_.size()) + 1, batch, seq, hidden};
    all.data.resize((layers_.size() + 1) * state_size);
    states = all.data.data();
    copy_out(hidden_, states);
    states += state_size;
  }
  const int32_t head_dim = hidden / config_.heads;
  for (const EncoderLayer& layer : layers_) {
    const AttentionShape shape{batch, seq, layer.heads, head_dim};
    layer.qkv->forward(kernels_, pool_, hidden_, qkv_);
    mark("qkv");
    multi_head_attention(kernels_, pool_, shape, qkv_, keep_.data(), attention_scratch_, ctx_);
    mark("attention");
    layer.attn_out->forward(kernels_, pool_, ctx_, attn_, Activation::kNone, &hidden_);
    mark("attention_output");
    layer_norm(kernels_, pool_, layer.attn_ln, config_.layer_norm_eps, attn_);
    mark("layer_norm");
    // Fused only when the tiles share out evenly: otherwise the unfused ops split rows to balance the threads.
    if (layer.ffn_fused && attn_.num_tiles() % pool_.size() == 0) {
      fused_ffn(kernels_, pool_, *layer.ffn_up, *layer.ffn_down, config_.hidden_act, attn_, hidden_, ffn_panels_);
      mark("ffn");
    } else {
      layer.ffn_up->forward(kernels_, pool_, attn_, ffn_, config_.hidden_act);
      mark("ffn_up");
      layer.ffn_down->forward(kernels_, pool_, ffn_, hidden_, Activation::kNone, &attn_);
      mark("ffn_down");
    }
    layer_norm(kernels_, pool_, layer.ffn_ln, config_.layer_norm_eps, hidden_);
    mark("layer_norm");
    if (states) {
      copy_out(hidden_, states);
      states += state_size;
      mark("hidden_states");
    }
  }

  Output& last = out["last_hidden_state"];
  last.shape = {batch, seq, hidden};
  last.data.resize(static_cast<std::size_t>(tokens) * hidden);
  copy_out(hidden_, last.data.data());

  if (pooler_) {
    // The pooler reads each sequence's first token.
    cls_.resize(hidden, batch);
    for (int32_t b = 0; b < batch; ++b)
      for (int32_t f = 0; f < hidden; ++f) cls_.at(f, b) = hidden_.at(f, b * seq);
    pooler_->forward(kernels_, pool_, cls_, pooled_, config_.pooler_act);
    if (!config_.pooler_is_head) {
      Output& po = out["pooler_output"];
      po.shape = {batch, hidden};
      po.data.resize(static_cast<std::size_t>(batch) * hidden);
      copy_out(pooled_, po.data.data());
    }
  }
  if (config_.head == Head::kSequenceClassification) {
    head_linear_->forward(kernels_, pool_, pooled_, head_out_);
    Output& logits = out["logits"];
    logits.shape = {batch, config_.num_labels};
    logits.data.resize(static_cast<std::size_t>(batch) * config_.num_labels);
    copy_out(head_out_, logits.data.data());
  } else if (config_.head == Head::kTokenClassification) {
    head_linear_->forward(kernels_, pool_, hidden_, head_out_);
    Output& logits = out["logits"];
    logits.shape = {batch, seq, config_.num_labels};
    logits.data.resize(static_cast<std::size_t>(tokens) * config_.num_labels);
    copy_out(head_out_, logits.data.data());
  } else if (config_.head == Head::kQuestionAnswering) {
    head_linear_->forward(kernels_, pool_, hidden_, head_out_);
    Output& start = out["start_logits"];
    Output& end = out["end_logits"];
    start.shape = end.shape = {batch, seq};
    start.data.resize(tokens);
    end.data.resize(tokens);
    for (int32_t t = 0; t < tokens; ++t) {
      start.data[t] = head_out_.at(0, t);
      end.data[t] = head_out_.at(1, t);
    }
  }
  mark("heads_and_output");
  return out;
}

void Encoder::mark(const char* op) {
  if (!profiling_) return;
  const auto now = std::chrono::steady_clock::now();
  const double ms = std::chrono::duration<double, std::milli>(now - last_mark_).count();
  last_mark_ = now;
  for (auto& entry : profile_)
    if (entry.first == op) {
      entry.second += ms;
      return;
    }
  profile_.emplace_back(op, ms);
}

std::vector<std::pair<std::string, double>> Encoder::last_profile() const { return profile_; }

}  // namespace sparsebert
