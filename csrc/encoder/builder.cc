#include "encoder/builder.h"

#include <set>
#include <stdexcept>
#include <utility>

namespace sparsebert {
namespace {

std::string shape_text(const std::vector<int64_t>& dims) {
  std::string s = "(";
  for (std::size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + (dims.size() == 1 ? ",)" : ")");
}

// Hands out weights by name, checking kind and shape, and remembers which names were used.
class WeightTaker {
 public:
  explicit WeightTaker(const EncoderWeights& weights) : weights_(weights) {}

  void copy_array(const std::string& name, const std::vector<int64_t>& shape, AlignedBuffer<float>& dst) {
    used_.insert(name);
    const auto it = weights_.arrays.find(name);
    if (it == weights_.arrays.end()) throw missing(name, weights_.linears.count(name) ? "an array" : nullptr);
    if (it->second.shape != shape)
      throw std::invalid_argument(name + ": expected shape " + shape_text(shape) + ", got " +
                                  shape_text(it->second.shape));
    std::size_t count = 1;
    for (int64_t d : shape) count *= static_cast<std::size_t>(d);
    dst.assign(it->second.data, count);
  }

  std::shared_ptr<const PackedLinear> linear(const std::string& name, std::pair<int32_t, int32_t> shape) {
    used_.insert(name);
    const auto it = weights_.linears.find(name);
    if (it == weights_.linears.end()) throw missing(name, weights_.arrays.count(name) ? "a PackedLinear" : nullptr);
    const PackedLinear& p = *it->second;
    if (p.rows() != shape.first || p.cols() != shape.second)
      throw std::invalid_argument(name + ": expected shape " + shape_text({shape.first, shape.second}) + ", got " +
                                  shape_text({p.rows(), p.cols()}));
    return it->second;
  }

  void reject_unused() const {
    std::string extra;
    auto collect = [&](const std::string& name) {
      if (!used_.count(name)) extra += (extra.empty() ? "" : ", ") + name;
    };
    for (const auto& kv : weights_.arrays) collect(kv.first);
    for (const auto& kv : weights_.linears) collect(kv.first);
    if (!extra.empty()) throw std::invalid_argument("encoder tensors: unexpected names for this config: " + extra);
  }

 private:
  static std::invalid_argument missing(const std::string& name, const char* wanted_kind) {
    if (wanted_kind) return std::invalid_argument(name + ": expected " + std::string(wanted_kind));
    return std::invalid_argument("encoder tensors: missing '" + name + "'");
  }

  const EncoderWeights& weights_;
  std::set<std::string> used_;
};

}  // namespace

std::unique_ptr<Encoder> build_encoder(const ConfigMap& config, const EncoderWeights& weights, int num_threads,
                                       const std::string& isa, const EncoderOptions& options) {
  if (num_threads < 1 || num_threads > kMaxThreads)
    throw std::invalid_argument("num_threads must be in [1, " + std::to_string(kMaxThreads) + "], got " +
                                std::to_string(num_threads));
  const EncoderSpec spec = encoder_spec(config);
  const EncoderConfig& cfg = spec.config;
  WeightTaker take(weights);
  std::map<std::string, std::vector<int64_t>> arrays(spec.arrays.begin(), spec.arrays.end());
  std::map<std::string, std::pair<int32_t, int32_t>> linears(spec.linears.begin(), spec.linears.end());

  EmbeddingTables emb;
  emb.hidden = cfg.hidden;
  emb.vocab = cfg.vocab;
  emb.positions = cfg.max_positions;
  emb.token_types = cfg.type_vocab;
  emb.eps = cfg.layer_norm_eps;
  for (auto& [name, dst] : {std::pair<const char*, AlignedBuffer<float>*>{"embeddings.word_embeddings", &emb.word},
                            {"embeddings.position_embeddings", &emb.position},
                            {"embeddings.token_type_embeddings", &emb.token_type},
                            {"embeddings.layer_norm.weight", &emb.gamma},
                            {"embeddings.layer_norm.bias", &emb.beta}})
    take.copy_array(name, arrays.at(name), *dst);

  std::vector<EncoderLayer> layers(cfg.layers);
  for (int32_t i = 0; i < cfg.layers; ++i) {
    const std::string p = "layers." + std::to_string(i) + ".";
    EncoderLayer& l = layers[i];
    l.heads = cfg.layer_heads[i];
    l.intermediate = cfg.layer_intermediate[i];
    l.qkv = take.linear(p + "attention.qkv", linears.at(p + "attention.qkv"));
    l.attn_out = take.linear(p + "attention.output", linears.at(p + "attention.output"));
    l.ffn_up = take.linear(p + "ffn.up", linears.at(p + "ffn.up"));
    l.ffn_down = take.linear(p + "ffn.down", linears.at(p + "ffn.down"));
    for (auto& [suffix, dst] : {std::pair<const char*, AlignedBuffer<float>*>{"attention.layer_norm.weight",
                                                                              &l.attn_ln.gamma},
                                {"attention.layer_norm.bias", &l.attn_ln.beta},
                                {"ffn.layer_norm.weight", &l.ffn_ln.gamma},
                                {"ffn.layer_norm.bias", &l.ffn_ln.beta}})
      take.copy_array(p + suffix, arrays.at(p + suffix), *dst);
  }
  std::shared_ptr<const PackedLinear> pooler, head;
  if (linears.count("pooler")) pooler = take.linear("pooler", linears.at("pooler"));
  for (const char* name : {"classifier", "qa_outputs"})
    if (linears.count(name)) head = take.linear(name, linears.at(name));
  std::unique_ptr<MaskedLmHead> masked_lm;
  if (cfg.head == Head::kMaskedLm) {
    masked_lm = std::make_unique<MaskedLmHead>();
    masked_lm->transform = take.linear("mlm.transform", linears.at("mlm.transform"));
    masked_lm->act = cfg.mlm_act;
    masked_lm->eps = cfg.layer_norm_eps;
    for (auto& [name, dst] : {std::pair<const char*, AlignedBuffer<float>*>{"mlm.layer_norm.weight",
                                                                            &masked_lm->norm.gamma},
                              {"mlm.layer_norm.bias", &masked_lm->norm.beta}})
      take.copy_array(name, arrays.at(name), *dst);
    if (cfg.mlm_decoder_tied)
      take.copy_array("mlm.decoder_bias", arrays.at("mlm.decoder_bias"), masked_lm->tied_bias);
    else
      masked_lm->decoder = take.linear("mlm.decoder", linears.at("mlm.decoder"));
  }
  take.reject_unused();
  return std::make_unique<Encoder>(cfg, std::move(emb), std::move(layers), pooler, head, std::move(masked_lm),
                                   num_threads, isa, options);
}

}  // namespace sparsebert
