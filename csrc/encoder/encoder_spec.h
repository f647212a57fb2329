// What an encoder is made of, owned here once: the config schema (keys, types, bounds, choices), the names and
// shapes of the weights a config needs, its outputs, and the limits of a call. The file format (Python) and the
// engine both read this through _core (encoder_spec, CONFIG_LIMITS, MAX_THREADS, MAX_TOKENS), so a file the
// exporter writes is exactly a file the engine accepts.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "kernels/kernels.h"

namespace sparsebert {

constexpr int kMaxThreads = 1024;
constexpr int32_t kQaOutputs = 2;  // a question-answering head's start and end logits
// Tokens one chunk of a call computes at a time by default: the working set of BERT-base is then ~50 MB fp32 or
// int8, while 32 tiles still give every thread plenty of work. Measured on BERT-base 90%, 32 x 128 tokens, 2
// threads: 8-19% faster per sequence than chunks of 4096 (whose activations spill further from the cores and
// whose scratch was freed after every call), 1024 slower again in fp32.
constexpr int32_t kDefaultMaxBatchTokens = 2048;
// After a call whose chunks were larger than this, the scratch is freed rather than kept for the engine's life.
constexpr int32_t kKeepScratchTokens = 2048;
// batch x seq of one call: keeps every index product of the encoder (tokens x 4 x features) inside int32.
constexpr int64_t kMaxTokens = (int64_t{1} << 31) / 4 - 1;

// One config value as the bindings hand it over: JSON's scalars and lists of integers; anything else is `Other`.
struct Other {};
using ConfigValue = std::variant<Other, bool, int64_t, double, std::string, std::vector<int64_t>>;
using ConfigMap = std::map<std::string, ConfigValue>;

// The integer keys of a config and their bounds (the bounds keep every index product far from int32 overflow).
struct IntKey {
  const char* key;
  int64_t lo, hi;
};
const std::vector<IntKey>& config_int_keys();

// The string keys and their allowed values (optional ones: the first value is what a config without them means).
struct ChoiceKey {
  const char* key;
  bool required;
  std::vector<const char*> values;
};
const std::vector<ChoiceKey>& config_choice_keys();

enum class Head { kNone, kSequenceClassification, kQuestionAnswering, kTokenClassification, kMaskedLm };

struct EncoderConfig {
  int32_t hidden = 0, layers = 0, heads = 0, intermediate = 0, vocab = 0, max_positions = 0, type_vocab = 0;
  float layer_norm_eps = 1e-12f;
  Activation hidden_act = Activation::kGelu;
  Head head = Head::kNone;
  int32_t num_labels = 0;
  bool has_pooler = false;
  // The pooler is the first layer of the sequence classifier (RoBERTa's classifier.dense, DistilBERT's
  // pre_classifier), so pooler_output is no output of the model.
  bool pooler_is_head = false;
  Activation pooler_act = Activation::kTanh;  // BERT's pooler and RoBERTa's classifier: tanh; DistilBERT: ReLU
  // Position ids: 0 .. seq-1 (BERT, DistilBERT), or RoBERTa's: pad_token_id for padding tokens, else
  // pad_token_id + the token's rank among the sequence's non-padding tokens (counted from 1).
  bool positions_from_ids = false;
  int32_t pad_token_id = 0;
  // Attention heads and FFN neurons each layer kept (structured compaction); all of them when not given.
  std::vector<int32_t> layer_heads, layer_intermediate;
  // Masked-LM head (encoder/masked_lm.h): the transform's activation (BERT and DistilBERT: hidden_act; RoBERTa:
  // gelu), and whether the decoder is the word embedding table (tied: stored once) or a linear of its own.
  Activation mlm_act = Activation::kGelu;
  bool mlm_decoder_tied = true;

  // The longest sequence whose position ids stay inside the position table.
  int32_t max_sequence() const { return positions_from_ids ? max_positions - pad_token_id - 1 : max_positions; }
};

// std::invalid_argument("bad config: ...") listing every problem found.
EncoderConfig parse_config(const ConfigMap& config);

struct EncoderSpec {
  EncoderConfig config;
  std::vector<std::pair<std::string, std::vector<int64_t>>> arrays;        // float32 tensors, in file order
  std::vector<std::pair<std::string, std::pair<int32_t, int32_t>>> linears;  // packed linears [rows, cols]
  std::vector<std::string> outputs;                                        // what run() returns
};

EncoderSpec encoder_spec(const ConfigMap& config);

// "gelu" -> Activation::kGelu, ...; std::invalid_argument for an unknown name.
Activation parse_activation(const std::string& name);

}  // namespace sparsebert
