#include "encoder/encoder_spec.h"

#include <cmath>
#include <sstream>
#include <stdexcept>

namespace sparsebert {
namespace {

constexpr std::size_t kMaxListed = 20;  // problems listed in one message before the rest are only counted

class Problems {
 public:
  void add(std::string p) { items_.push_back(std::move(p)); }
  bool empty() const { return items_.empty(); }
  [[noreturn]] void raise() const {
    std::string text = "bad config: ";
    for (std::size_t i = 0; i < items_.size() && i < kMaxListed; ++i) text += (i ? "; " : "") + items_[i];
    if (items_.size() > kMaxListed) text += "; ... and " + std::to_string(items_.size() - kMaxListed) + " more";
    throw std::invalid_argument(text);
  }

 private:
  std::vector<std::string> items_;
};

std::string number_text(double x) {
  std::ostringstream text;
  text << x;  // 1e-50, 3.5: the shortest readable form
  return text.str();
}

std::string describe(const ConfigValue& v) {
  if (std::holds_alternative<bool>(v)) return std::get<bool>(v) ? "true" : "false";
  if (std::holds_alternative<int64_t>(v)) return std::to_string(std::get<int64_t>(v));
  if (std::holds_alternative<double>(v)) return number_text(std::get<double>(v));
  if (std::holds_alternative<std::string>(v)) return "'" + std::get<std::string>(v) + "'";
  if (std::holds_alternative<std::vector<int64_t>>(v)) return "a list";
  return "a value of another type";
}

std::string joined(const std::vector<const char*>& values) {
  std::string out;
  for (const char* v : values) out += (out.empty() ? "" : ", ") + std::string(v);
  return out;
}

// Reads typed values, recording what is wrong instead of stopping at the first problem.
class Reader {
 public:
  Reader(const ConfigMap& config, Problems& problems) : config_(config), problems_(problems) {}

  const ConfigValue* find(const char* key) const {
    const auto it = config_.find(key);
    return it == config_.end() ? nullptr : &it->second;
  }

  int32_t integer(const IntKey& k, bool required = true) {
    const ConfigValue* v = find(k.key);
    if (v == nullptr) {
      if (required) problems_.add(std::string("missing ") + k.key);
      return 0;
    }
    if (!std::holds_alternative<int64_t>(*v)) {
      problems_.add(std::string(k.key) + " must be an integer, got " + describe(*v));
      return 0;
    }
    const int64_t x = std::get<int64_t>(*v);
    if (x < k.lo || x > k.hi) {
      problems_.add(std::string(k.key) + " = " + std::to_string(x) + " is outside [" + std::to_string(k.lo) + ", " +
                    std::to_string(k.hi) + "]");
      return 0;
    }
    return static_cast<int32_t>(x);
  }

  std::string choice(const ChoiceKey& k) {
    const ConfigValue* v = find(k.key);
    if (v == nullptr) {
      if (k.required) problems_.add(std::string("missing ") + k.key);
      return k.values.front();
    }
    if (std::holds_alternative<std::string>(*v)) {
      const std::string& s = std::get<std::string>(*v);
      for (const char* allowed : k.values)
        if (s == allowed) return s;
    }
    problems_.add(std::string(k.key) + " is " + describe(*v) + ", not one of " + joined(k.values));
    return k.values.front();
  }

  bool flag(const char* key, bool required, bool fallback) {
    const ConfigValue* v = find(key);
    if (v == nullptr) {
      if (required) problems_.add(std::string("missing ") + key);
      return fallback;
    }
    if (!std::holds_alternative<bool>(*v)) {
      problems_.add(std::string(key) + " must be true or false, got " + describe(*v));
      return fallback;
    }
    return std::get<bool>(*v);
  }

  double number(const char* key) {
    const ConfigValue* v = find(key);
    if (v == nullptr) {
      problems_.add(std::string("missing ") + key);
      return 0.0;
    }
    if (std::holds_alternative<int64_t>(*v)) return static_cast<double>(std::get<int64_t>(*v));
    if (std::holds_alternative<double>(*v)) return std::get<double>(*v);
    problems_.add(std::string(key) + " must be a number, got " + describe(*v));
    return 0.0;
  }

  // An optional per-layer list of counts in [1, most]; absent: `most` for every layer.
  std::vector<int32_t> per_layer(const char* key, int32_t layers, int32_t most) {
    const ConfigValue* v = find(key);
    if (v == nullptr) return std::vector<int32_t>(layers, most);
    const auto* list = std::get_if<std::vector<int64_t>>(v);
    bool ok = list != nullptr && list->size() == static_cast<std::size_t>(layers);
    for (std::size_t i = 0; ok && i < list->size(); ++i) ok = (*list)[i] >= 1 && (*list)[i] <= most;
    if (!ok) {
      problems_.add(std::string(key) + " must list " + std::to_string(layers) + " integers in [1, " +
                    std::to_string(most) + "]");
      return std::vector<int32_t>(layers, most);
    }
    return std::vector<int32_t>(list->begin(), list->end());
  }

 private:
  const ConfigMap& config_;
  Problems& problems_;
};

const IntKey& int_key(const char* key) {
  for (const IntKey& k : config_int_keys())
    if (std::string(k.key) == key) return k;
  throw std::logic_error(std::string("no integer config key ") + key);
}

const ChoiceKey& choice_key(const char* key) {
  for (const ChoiceKey& k : config_choice_keys())
    if (std::string(k.key) == key) return k;
  throw std::logic_error(std::string("no choice config key ") + key);
}

Head parse_head(const std::string& head) {
  if (head == "sequence_classification") return Head::kSequenceClassification;
  if (head == "question_answering") return Head::kQuestionAnswering;
  if (head == "token_classification") return Head::kTokenClassification;
  if (head == "masked_lm") return Head::kMaskedLm;
  return Head::kNone;
}

}  // namespace

const std::vector<IntKey>& config_int_keys() {
  static const std::vector<IntKey> keys = {
      {"hidden_size", 1, 65535},
      {"num_hidden_layers", 1, 1024},
      {"num_attention_heads", 1, 65535},
      {"intermediate_size", 1, 65535},
      {"vocab_size", 1, 1 << 24},
      {"max_position_embeddings", 1, 1 << 16},
      {"type_vocab_size", 1, 1 << 16},
      {"num_labels", 0, 1 << 20},
      {"pad_token_id", 0, 1 << 24},  // with position_ids 'padding_offset' only
  };
  return keys;
}

const std::vector<ChoiceKey>& config_choice_keys() {
  static const std::vector<ChoiceKey> keys = {
      {"model_type", true, {"bert", "distilbert", "roberta"}},
      {"hidden_act", true, {"gelu", "gelu_new", "gelu_pytorch_tanh", "relu"}},
      {"head", true, {"none", "sequence_classification", "question_answering", "token_classification", "masked_lm"}},
      {"position_ids", false, {"absolute", "padding_offset"}},
      {"pooler_act", false, {"tanh", "relu"}},
      {"mlm_act", false, {"gelu", "gelu_new", "gelu_pytorch_tanh", "relu"}},
      {"mlm_decoder", false, {"tied", "separate"}},
  };
  return keys;
}

Activation parse_activation(const std::string& name) {
  if (name == "none") return Activation::kNone;
  if (name == "gelu") return Activation::kGelu;
  if (name == "gelu_tanh" || name == "gelu_new" || name == "gelu_pytorch_tanh") return Activation::kGeluTanh;
  if (name == "relu") return Activation::kRelu;
  if (name == "tanh") return Activation::kTanh;
  throw std::invalid_argument("unknown activation '" + name +
                              "' (known: none, gelu, gelu_tanh, gelu_new, gelu_pytorch_tanh, relu, tanh)");
}

EncoderConfig parse_config(const ConfigMap& config) {
  Problems problems;
  Reader read(config, problems);
  EncoderConfig cfg;
  read.choice(choice_key("model_type"));
  cfg.hidden = read.integer(int_key("hidden_size"));
  cfg.layers = read.integer(int_key("num_hidden_layers"));
  cfg.heads = read.integer(int_key("num_attention_heads"));
  cfg.intermediate = read.integer(int_key("intermediate_size"));
  cfg.vocab = read.integer(int_key("vocab_size"));
  cfg.max_positions = read.integer(int_key("max_position_embeddings"));
  cfg.type_vocab = read.integer(int_key("type_vocab_size"));
  cfg.num_labels = read.integer(int_key("num_labels"));
  const double eps = read.number("layer_norm_eps");
  // The engine computes in float32: an eps that rounds to 0 (1e-50) or overflows there is refused.
  const float eps32 = static_cast<float>(eps);
  if (!(eps32 > 0.0f && std::isfinite(eps32)))
    problems.add("layer_norm_eps must be a positive number that float32 holds, got " + number_text(eps));
  cfg.layer_norm_eps = static_cast<float>(eps);
  cfg.hidden_act = parse_activation(read.choice(choice_key("hidden_act")));
  cfg.head = parse_head(read.choice(choice_key("head")));
  cfg.has_pooler = read.flag("has_pooler", true, false);
  cfg.pooler_is_head = read.flag("pooler_is_head", false, false);
  cfg.pooler_act = parse_activation(read.choice(choice_key("pooler_act")));
  cfg.positions_from_ids = read.choice(choice_key("position_ids")) == "padding_offset";
  if (cfg.positions_from_ids) cfg.pad_token_id = read.integer(int_key("pad_token_id"));
  cfg.mlm_act = parse_activation(read.choice(choice_key("mlm_act")));
  cfg.mlm_decoder_tied = read.choice(choice_key("mlm_decoder")) == "tied";
  if (!problems.empty()) problems.raise();

  // Rules between keys, checked once every key is known to be well formed.
  if (cfg.hidden % cfg.heads)
    problems.add("hidden_size " + std::to_string(cfg.hidden) + " is not a multiple of num_attention_heads " +
                 std::to_string(cfg.heads));
  if (cfg.head == Head::kSequenceClassification && !(cfg.has_pooler && cfg.num_labels >= 1))
    problems.add("head 'sequence_classification' needs has_pooler = true and num_labels >= 1");
  if (cfg.head == Head::kTokenClassification && cfg.num_labels < 1)
    problems.add("head 'token_classification' needs num_labels >= 1");
  if (cfg.head == Head::kQuestionAnswering && cfg.num_labels != kQaOutputs)
    problems.add("head 'question_answering' needs num_labels = " + std::to_string(kQaOutputs));
  if (cfg.pooler_is_head && !(cfg.has_pooler && cfg.head == Head::kSequenceClassification))
    problems.add("pooler_is_head needs a pooler and head 'sequence_classification'");
  if (cfg.positions_from_ids && !(cfg.pad_token_id < cfg.vocab && cfg.pad_token_id + 1 < cfg.max_positions))
    problems.add("position_ids 'padding_offset' needs pad_token_id in [0, vocab_size) with pad_token_id + 1 < "
                 "max_position_embeddings, got " + std::to_string(cfg.pad_token_id));
  cfg.layer_heads = read.per_layer("layer_heads", cfg.layers, cfg.heads);
  cfg.layer_intermediate = read.per_layer("layer_intermediate", cfg.layers, cfg.intermediate);
  if (!problems.empty()) problems.raise();
  return cfg;
}

EncoderSpec encoder_spec(const ConfigMap& config) {
  EncoderSpec spec;
  spec.config = parse_config(config);
  const EncoderConfig& c = spec.config;
  const int64_t h = c.hidden, head_dim = c.hidden / c.heads;
  auto array = [&](std::string name, std::vector<int64_t> shape) { spec.arrays.emplace_back(name, shape); };
  auto linear = [&](std::string name, int64_t rows, int64_t cols) {
    spec.linears.emplace_back(name, std::make_pair(static_cast<int32_t>(rows), static_cast<int32_t>(cols)));
  };
  array("embeddings.word_embeddings", {c.vocab, h});
  array("embeddings.position_embeddings", {c.max_positions, h});
  array("embeddings.token_type_embeddings", {c.type_vocab, h});
  array("embeddings.layer_norm.weight", {h});
  array("embeddings.layer_norm.bias", {h});
  for (int32_t i = 0; i < c.layers; ++i) {
    const std::string p = "layers." + std::to_string(i) + ".";
    const int64_t width = c.layer_heads[i] * head_dim, neurons = c.layer_intermediate[i];
    linear(p + "attention.qkv", 3 * width, h);
    linear(p + "attention.output", h, width);
    array(p + "attention.layer_norm.weight", {h});
    array(p + "attention.layer_norm.bias", {h});
    linear(p + "ffn.up", neurons, h);
    linear(p + "ffn.down", h, neurons);
    array(p + "ffn.layer_norm.weight", {h});
    array(p + "ffn.layer_norm.bias", {h});
  }
  if (c.has_pooler) linear("pooler", h, h);
  if (c.head == Head::kSequenceClassification || c.head == Head::kTokenClassification)
    linear("classifier", c.num_labels, h);
  if (c.head == Head::kQuestionAnswering) linear("qa_outputs", kQaOutputs, h);
  if (c.head == Head::kMaskedLm) {
    linear("mlm.transform", h, h);
    array("mlm.layer_norm.weight", {h});
    array("mlm.layer_norm.bias", {h});
    // Tied: the decoder's weight is embeddings.word_embeddings, only its bias is stored.
    if (c.mlm_decoder_tied)
      array("mlm.decoder_bias", {c.vocab});
    else
      linear("mlm.decoder", c.vocab, h);
  }

  spec.outputs = {"last_hidden_state"};
  if (c.has_pooler && !c.pooler_is_head) spec.outputs.emplace_back("pooler_output");
  if (c.head == Head::kSequenceClassification || c.head == Head::kTokenClassification || c.head == Head::kMaskedLm)
    spec.outputs.emplace_back("logits");
  if (c.head == Head::kQuestionAnswering) {
    spec.outputs.emplace_back("start_logits");
    spec.outputs.emplace_back("end_logits");
  }
  return spec;
}

}  // namespace sparsebert
