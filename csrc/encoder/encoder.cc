#include "encoder/encoder.h"

#include <algorithm>
#include <chrono>
#include <stdexcept>
#include <utility>

#include "common/after_fork.h"
#include "kernels/dispatch.h"
#include "ops/fused_ffn.h"
#include "ops/tiled_ffn.h"

namespace sparsebert {
namespace {

void require(bool ok, const std::string& message) {
  if (!ok) throw std::invalid_argument(message);
}

const Bf16Kernels* bf16_attention_kernels(const std::string& isa) {
  std::string why_not;
  const Bf16Kernels* kernels = bf16_kernels_for_isa(isa, &why_not);
  require(kernels != nullptr, why_not);
  return kernels;
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

void poll(const std::atomic<bool>* cancel) {
  if (cancel != nullptr && cancel->load(std::memory_order_relaxed)) throw Cancelled();
}

}  // namespace

// One call's working set: the checked copies of its inputs, and the activations of one chunk.
struct Encoder::Scratch {
  std::vector<int32_t> ids, types, positions;
  std::vector<uint8_t> keep;
  TileMatrix hidden, qkv, ctx, attn, cls, pooled, head_out;
  TiledFfnScratch ffn;
  LinearScratch linear;  // the int8 layers' quantized inputs, kept across layers and calls
  std::vector<AttentionScratch> attention;
  std::vector<AlignedBuffer<float>> ffn_panels;
  // Masked-LM logits at chosen tokens: the copied pairs, their indices ordered by sequence (stable), and one
  // chunk's picked tokens and output rows.
  std::vector<int32_t> picks;
  std::vector<int64_t> pick_order, pick_rows;
  std::vector<int32_t> pick_tokens;
  bool all_tokens = true;
  MaskedLmScratch mlm;
};

// Adds the time since the previous mark to an op of the call's profile (nothing when not profiling).
class Encoder::Timer {
 public:
  explicit Timer(Profile* profile) : profile_(profile), last_(std::chrono::steady_clock::now()) {}
  void mark(const char* op) {
    if (profile_ == nullptr) return;
    const auto now = std::chrono::steady_clock::now();
    const double ms = std::chrono::duration<double, std::milli>(now - last_).count();
    last_ = now;
    for (auto& entry : *profile_)
      if (entry.first == op) {
        entry.second += ms;
        return;
      }
    profile_->emplace_back(op, ms);
  }

 private:
  Profile* profile_;
  std::chrono::steady_clock::time_point last_;
};

Encoder::Encoder(EncoderConfig config, EmbeddingTables embeddings, std::vector<EncoderLayer> layers,
                 std::shared_ptr<const PackedLinear> pooler, std::shared_ptr<const PackedLinear> head_linear,
                 std::unique_ptr<MaskedLmHead> masked_lm, int num_threads, const std::string& isa,
                 const EncoderOptions& options)
    : config_(config),
      embeddings_(std::move(embeddings)),
      layers_(std::move(layers)),
      pooler_(std::move(pooler)),
      head_linear_(std::move(head_linear)),
      masked_lm_(std::move(masked_lm)),
      isa_(isa),
      kernels_(kernels_for(isa)),
      bf16_(options.bf16_attention ? bf16_attention_kernels(isa) : nullptr),
      pool_(num_threads),
      max_batch_tokens_(options.max_batch_tokens),
      run_mutex_(std::make_unique<std::mutex>()),
      scratch_(std::make_unique<Scratch>()) {
  require(max_batch_tokens_ >= 1 && max_batch_tokens_ <= kMaxTokens,
          "max_batch_tokens must be in [1, " + std::to_string(kMaxTokens) + "], got " +
              std::to_string(max_batch_tokens_));
  for (EncoderLayer& layer : layers_)
    layer.ffn_fused = options.fuse_ffn && ffn_fusable(*layer.ffn_up, *layer.ffn_down);
  // In a forked child: a new lock and new buffers. The old ones are abandoned, never touched again: the thread
  // that held or was changing them does not exist there.
  add_fork_repair(this, [this] {
    run_mutex_.release();
    scratch_.release();
    run_mutex_ = std::make_unique<std::mutex>();
    scratch_ = std::make_unique<Scratch>();
  });
}

Encoder::~Encoder() { remove_fork_repair(this); }

void Encoder::check_inputs(const Scratch& s, int64_t tokens) const {
  for (int64_t t = 0; t < tokens; ++t) {
    require(s.ids[t] >= 0 && s.ids[t] < config_.vocab, "input_ids value " + std::to_string(s.ids[t]) +
                                                            " is outside [0, " + std::to_string(config_.vocab) + ")");
    require(s.types[t] >= 0 && s.types[t] < config_.type_vocab,
            "token_type_ids value " + std::to_string(s.types[t]) + " is outside [0, " +
                std::to_string(config_.type_vocab) + ")");
    require(s.keep[t] <= 1, "attention_mask values must be 0 or 1");
  }
}

bool Encoder::take_logits_at(Scratch& s, const LogitsAt* logits_at, int32_t batch, int32_t seq) const {
  if (logits_at == nullptr) return false;
  require(config_.head == Head::kMaskedLm, "logits_at is for a model with a masked_lm head");
  const int64_t count = logits_at->count, most = static_cast<int64_t>(batch) * seq;
  require(count >= 0 && count <= most, "logits_at holds " + std::to_string(count) +
                                           " pairs; a call takes at most one per token (" + std::to_string(most) +
                                           ")");
  s.picks.assign(logits_at->pairs, logits_at->pairs + 2 * count);
  for (int64_t i = 0; i < count; ++i) {
    const int32_t b = s.picks[2 * i], p = s.picks[2 * i + 1];
    require(b >= 0 && b < batch && p >= 0 && p < seq,
            "logits_at pair " + std::to_string(i) + " is (" + std::to_string(b) + ", " + std::to_string(p) +
                "), outside batch [0, " + std::to_string(batch) + ") x position [0, " + std::to_string(seq) + ")");
  }
  s.pick_order.resize(count);
  for (int64_t i = 0; i < count; ++i) s.pick_order[i] = i;
  std::stable_sort(s.pick_order.begin(), s.pick_order.end(),
                   [&](int64_t x, int64_t y) { return s.picks[2 * x] < s.picks[2 * y]; });
  return true;
}

std::map<std::string, Output> Encoder::allocate_outputs(int32_t batch, int32_t seq, bool hidden_states,
                                                        int64_t picks) const {
  std::map<std::string, Output> out;
  const int64_t b = batch, s = seq, h = config_.hidden;
  auto add = [&](const char* name, std::vector<int64_t> shape) {
    Output& o = out[name];
    int64_t size = 1;
    for (int64_t d : shape) size *= d;
    o.shape = std::move(shape);
    o.data.resize(static_cast<std::size_t>(size));
  };
  add("last_hidden_state", {b, s, h});
  if (hidden_states) add("hidden_states", {static_cast<int64_t>(layers_.size()) + 1, b, s, h});
  if (pooler_ && !config_.pooler_is_head) add("pooler_output", {b, h});
  if (config_.head == Head::kSequenceClassification) add("logits", {b, config_.num_labels});
  if (config_.head == Head::kTokenClassification) add("logits", {b, s, config_.num_labels});
  if (config_.head == Head::kMaskedLm) {
    if (picks < 0)
      add("logits", {b, s, config_.vocab});
    else
      add("logits", {picks, config_.vocab});
  }
  if (config_.head == Head::kQuestionAnswering) {
    add("start_logits", {b, s});
    add("end_logits", {b, s});
  }
  return out;
}

std::map<std::string, Output> Encoder::run(const int32_t* input_ids, const int32_t* attention_mask,
                                           const int32_t* token_type_ids, int32_t batch, int32_t seq,
                                           bool hidden_states, Profile* profile, const std::atomic<bool>* cancel,
                                           const LogitsAt* logits_at) {
  require(batch > 0 && seq > 0, "inputs have shape [" + std::to_string(batch) + ", " + std::to_string(seq) +
                                    "]: batch and sequence length must be at least 1");
  require(seq <= config_.max_sequence(),
          "sequence length " + std::to_string(seq) + " exceeds the longest this model accepts (" +
              std::to_string(config_.max_sequence()) + ", from its position embeddings)");
  const int64_t tokens = static_cast<int64_t>(batch) * seq;
  require(tokens <= kMaxTokens,
          "inputs hold " + std::to_string(tokens) + " tokens; one call takes at most " + std::to_string(kMaxTokens));
  std::lock_guard<std::mutex> lock(*run_mutex_);
  Scratch& s = *scratch_;
  s.ids.assign(input_ids, input_ids + tokens);
  s.types.assign(token_type_ids, token_type_ids + tokens);
  // A mask value other than 0 and 1 becomes 2, which the check refuses (a byte cast could wrap it into range).
  s.keep.resize(tokens);
  for (int64_t t = 0; t < tokens; ++t) s.keep[t] = attention_mask[t] == 0 ? 0 : attention_mask[t] == 1 ? 1 : 2;
  check_inputs(s, tokens);
  s.all_tokens = !take_logits_at(s, logits_at, batch, seq);

  std::map<std::string, Output> out =
      allocate_outputs(batch, seq, hidden_states, s.all_tokens ? -1 : static_cast<int64_t>(s.pick_order.size()));
  Timer timer(profile);
  if (profile) profile->clear();
  const int32_t chunk = std::max<int32_t>(1, max_batch_tokens_ / seq);  // whole sequences per chunk
  try {
    for (int32_t b0 = 0; b0 < batch; b0 += chunk) {
      poll(cancel);
      run_chunk(s, b0, std::min(chunk, batch - b0), seq, out, timer, cancel);
    }
  } catch (...) {
    if (std::min(chunk, batch) * seq > kKeepScratchTokens) *scratch_ = Scratch();
    throw;
  }
  // A large call's activations are not kept for the engine's life (the returned arrays are the caller's).
  if (static_cast<int64_t>(std::min(chunk, batch)) * seq > kKeepScratchTokens) *scratch_ = Scratch();
  return out;
}

void Encoder::run_chunk(Scratch& s, int32_t b0, int32_t count, int32_t seq, std::map<std::string, Output>& out,
                        Timer& timer, const std::atomic<bool>* cancel) {
  const int64_t first = static_cast<int64_t>(b0) * seq;  // the chunk's first token in the call
  const int32_t tokens = count * seq;
  const int32_t hidden = config_.hidden;
  const int32_t* ids = s.ids.data() + first;
  s.positions.resize(tokens);
  for (int32_t b = 0; b < count; ++b) {
    int32_t* pos = s.positions.data() + static_cast<int64_t>(b) * seq;
    const int32_t* row = ids + static_cast<int64_t>(b) * seq;
    if (!config_.positions_from_ids) {
      for (int32_t i = 0; i < seq; ++i) pos[i] = i;
      continue;
    }
    int32_t rank = 0;  // run() bounds seq, so pad_token_id + rank < max_positions
    for (int32_t i = 0; i < seq; ++i)
      pos[i] = row[i] == config_.pad_token_id ? config_.pad_token_id : config_.pad_token_id + ++rank;
  }
  embed(kernels_, pool_, embeddings_, ids, s.types.data() + first, s.positions.data(), tokens, s.hidden);
  timer.mark("embeddings");
  Output* states = out.count("hidden_states") ? &out["hidden_states"] : nullptr;
  const int64_t state_size = static_cast<int64_t>(out["last_hidden_state"].data.size());  // one [B, S, H] slot
  auto save_state = [&](std::size_t index) {
    copy_out(s.hidden, states->data.data() + index * state_size + first * hidden);
  };
  if (states) save_state(0);
  const int32_t head_dim = hidden / config_.heads;
  for (std::size_t i = 0; i < layers_.size(); ++i) {
    poll(cancel);
    const EncoderLayer& layer = layers_[i];
    const AttentionShape shape{count, seq, layer.heads, head_dim};
    layer.qkv->forward(kernels_, pool_, s.hidden, s.qkv, Activation::kNone, nullptr, &s.linear);
    timer.mark("qkv");
    multi_head_attention(kernels_, bf16_, pool_, shape, s.qkv, s.keep.data() + first, s.attention, s.ctx);
    timer.mark("attention");
    layer.attn_out->forward(kernels_, pool_, s.ctx, s.attn, Activation::kNone, &s.hidden, &s.linear);
    timer.mark("attention_output");
    layer_norm(kernels_, pool_, layer.attn_ln, config_.layer_norm_eps, s.attn);
    timer.mark("layer_norm");
    ffn(layer, s, timer);
    layer_norm(kernels_, pool_, layer.ffn_ln, config_.layer_norm_eps, s.hidden);
    timer.mark("layer_norm");
    if (states) {
      save_state(i + 1);
      timer.mark("hidden_states");
    }
  }
  copy_out(s.hidden, out["last_hidden_state"].data.data() + first * hidden);

  if (pooler_) {
    // The pooler reads each sequence's first token.
    s.cls.resize(hidden, count);
    for (int32_t b = 0; b < count; ++b)
      for (int32_t f = 0; f < hidden; ++f) s.cls.at(f, b) = s.hidden.at(f, b * seq);
    pooler_->forward(kernels_, pool_, s.cls, s.pooled, config_.pooler_act);
    if (!config_.pooler_is_head) copy_out(s.pooled, out["pooler_output"].data.data() + int64_t{b0} * hidden);
  }
  const int64_t labels = config_.num_labels;
  if (config_.head == Head::kSequenceClassification) {
    head_linear_->forward(kernels_, pool_, s.pooled, s.head_out);
    copy_out(s.head_out, out["logits"].data.data() + int64_t{b0} * labels);
  } else if (config_.head == Head::kTokenClassification) {
    head_linear_->forward(kernels_, pool_, s.hidden, s.head_out);
    copy_out(s.head_out, out["logits"].data.data() + first * labels);
  } else if (config_.head == Head::kQuestionAnswering) {
    head_linear_->forward(kernels_, pool_, s.hidden, s.head_out);
    float* start = out["start_logits"].data.data() + first;
    float* end = out["end_logits"].data.data() + first;
    for (int32_t t = 0; t < tokens; ++t) {
      start[t] = s.head_out.at(0, t);
      end[t] = s.head_out.at(1, t);
    }
  } else if (config_.head == Head::kMaskedLm) {
    timer.mark("heads_and_output");
    masked_lm(s, b0, count, seq, out["logits"]);
    timer.mark("masked_lm");
    return;
  }
  timer.mark("heads_and_output");
}

void Encoder::masked_lm(Scratch& s, int32_t b0, int32_t count, int32_t seq, Output& logits) {
  s.pick_tokens.clear();
  s.pick_rows.clear();
  const int64_t first = static_cast<int64_t>(b0) * seq;
  if (s.all_tokens) {
    for (int32_t t = 0; t < count * seq; ++t) {
      s.pick_tokens.push_back(t);
      s.pick_rows.push_back(first + t);
    }
  } else {
    // The pairs of sequences [b0, b0 + count): a range of pick_order, which is ordered by sequence.
    const auto below = [&](int64_t i, int32_t b) { return s.picks[2 * i] < b; };
    auto it = std::lower_bound(s.pick_order.begin(), s.pick_order.end(), b0, below);
    const auto end = std::lower_bound(it, s.pick_order.end(), b0 + count, below);
    for (; it != end; ++it) {
      s.pick_tokens.push_back((s.picks[2 * *it] - b0) * seq + s.picks[2 * *it + 1]);
      s.pick_rows.push_back(*it);
    }
  }
  masked_lm_logits(kernels_, pool_, *masked_lm_, embeddings_.word.data(), config_.vocab, s.hidden, s.pick_tokens,
                   s.pick_rows, logits.data.data(), s.mlm);
}

void Encoder::ffn(const EncoderLayer& layer, Scratch& s, Timer& timer) {
  // Fused when the tiles share out evenly among the threads; otherwise up and down run apart, a group of tiles at
  // a time, splitting rows to balance the threads. Either way no [intermediate x tokens] matrix of the whole
  // chunk exists, and the sums are the same.
  if (layer.ffn_fused && s.attn.num_tiles() % pool_.size() == 0) {
    fused_ffn(kernels_, pool_, *layer.ffn_up, *layer.ffn_down, config_.hidden_act, s.attn, s.hidden, s.ffn_panels);
    timer.mark("ffn");
    return;
  }
  const int32_t group = kFfnGroupTilesPerThread * pool_.size();
  tiled_ffn(kernels_, pool_, *layer.ffn_up, *layer.ffn_down, config_.hidden_act, s.attn, s.hidden, group, s.ffn);
  timer.mark("ffn_tiled");
}

}  // namespace sparsebert
