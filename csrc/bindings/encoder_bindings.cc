// sparsebert._core.Encoder: builds the C++ encoder from a config dict and named weights, and runs it.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <limits>
#include <set>
#include <string>

#include "bindings/bindings.h"
#include "bindings/numpy_args.h"
#include "encoder/encoder.h"

namespace sparsebert {
namespace {

int32_t config_int(const py::dict& config, const char* key, int64_t lo, int64_t hi) {
  if (!config.contains(key)) throw py::value_error(std::string("encoder config: missing key '") + key + "'");
  py::object v = config[key];
  if (!py::isinstance<py::int_>(v) || py::isinstance<py::bool_>(v))
    throw py::value_error(std::string("encoder config: '") + key + "' must be an integer");
  const int64_t x = v.cast<int64_t>();
  if (x < lo || x > hi)
    throw py::value_error(std::string("encoder config: '") + key + "' = " + std::to_string(x) + " is outside [" +
                          std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return static_cast<int32_t>(x);
}

std::string config_str(const py::dict& config, const char* key) {
  if (!config.contains(key)) throw py::value_error(std::string("encoder config: missing key '") + key + "'");
  py::object v = config[key];
  if (!py::isinstance<py::str>(v)) throw py::value_error(std::string("encoder config: '") + key + "' must be a string");
  return v.cast<std::string>();
}

EncoderConfig parse_config(const py::dict& c) {
  EncoderConfig cfg;
  const std::string model_type = config_str(c, "model_type");
  if (model_type != "bert" && model_type != "distilbert" && model_type != "roberta")
    throw py::value_error("encoder config: unsupported model_type '" + model_type + "'");
  // Bounds keep every index product far from int32 overflow.
  cfg.hidden = config_int(c, "hidden_size", 1, 65535);
  cfg.layers = config_int(c, "num_hidden_layers", 1, 1024);
  cfg.heads = config_int(c, "num_attention_heads", 1, 65535);
  cfg.intermediate = config_int(c, "intermediate_size", 1, 65535);
  cfg.vocab = config_int(c, "vocab_size", 1, 1 << 24);
  cfg.max_positions = config_int(c, "max_position_embeddings", 1, 1 << 16);
  cfg.type_vocab = config_int(c, "type_vocab_size", 1, 1 << 16);
  if (!c.contains("layer_norm_eps")) throw py::value_error("encoder config: missing key 'layer_norm_eps'");
  cfg.layer_norm_eps = c["layer_norm_eps"].cast<float>();
  const std::string act = config_str(c, "hidden_act");
  if (act != "gelu" && act != "gelu_new" && act != "gelu_pytorch_tanh" && act != "relu")
    throw py::value_error("encoder config: unsupported hidden_act '" + act +
                          "' (supported: gelu, gelu_new, gelu_pytorch_tanh, relu)");
  cfg.hidden_act = parse_activation(act);
  const std::string head = config_str(c, "head");
  if (head == "none") cfg.head = Head::kNone;
  else if (head == "sequence_classification") cfg.head = Head::kSequenceClassification;
  else if (head == "question_answering") cfg.head = Head::kQuestionAnswering;
  else if (head == "token_classification") cfg.head = Head::kTokenClassification;
  else throw py::value_error("encoder config: unknown head '" + head + "'");
  const bool labelled = cfg.head == Head::kSequenceClassification || cfg.head == Head::kTokenClassification;
  cfg.num_labels = labelled ? config_int(c, "num_labels", 1, 1 << 20) : 0;
  // Optional keys (absent from files written before DistilBERT and RoBERTa): BERT's behaviour.
  const std::string positions = c.contains("position_ids") ? config_str(c, "position_ids") : "absolute";
  if (positions == "padding_offset") {
    cfg.positions_from_ids = true;
    cfg.pad_token_id = config_int(c, "pad_token_id", 0, 1 << 24);
  } else if (positions != "absolute") {
    throw py::value_error("encoder config: unknown position_ids '" + positions + "'");
  }
  const std::string pooler_act = c.contains("pooler_act") ? config_str(c, "pooler_act") : "tanh";
  if (pooler_act != "tanh" && pooler_act != "relu")
    throw py::value_error("encoder config: unknown pooler_act '" + pooler_act + "'");
  cfg.pooler_act = parse_activation(pooler_act);
  if (!c.contains("has_pooler") || !py::isinstance<py::bool_>(c["has_pooler"]))
    throw py::value_error("encoder config: 'has_pooler' must be a bool");
  cfg.has_pooler = c["has_pooler"].cast<bool>();
  cfg.validate();
  return cfg;
}

// An optional per-layer list of counts in [1, most]; absent: `most` for every layer.
std::vector<int32_t> per_layer(const py::dict& config, const char* key, int32_t layers, int32_t most) {
  if (!config.contains(key)) return std::vector<int32_t>(layers, most);
  py::object v = config[key];
  if (!py::isinstance<py::list>(v) || py::len(v) != static_cast<std::size_t>(layers))
    throw py::value_error(std::string("encoder config: '") + key + "' must be a list of " + std::to_string(layers) +
                          " integers");
  std::vector<int32_t> out;
  for (py::handle item : v) {
    if (!py::isinstance<py::int_>(item) || py::isinstance<py::bool_>(item))
      throw py::value_error(std::string("encoder config: '") + key + "' must hold integers");
    const int64_t x = item.cast<int64_t>();
    if (x < 1 || x > most)
      throw py::value_error(std::string("encoder config: '") + key + "' value " + std::to_string(x) +
                            " is outside [1, " + std::to_string(most) + "]");
    out.push_back(static_cast<int32_t>(x));
  }
  return out;
}

// Looks tensors up by name, checks kinds and shapes, and remembers which names were used.
class TensorSource {
 public:
  explicit TensorSource(const py::dict& tensors) : tensors_(tensors) {}

  void copy_array(const std::string& name, const std::vector<int64_t>& shape, AlignedBuffer<float>& dst) {
    auto a = checked_array<float>(get(name), name);
    check_shape(a, shape, name);
    dst.assign(a.data(), static_cast<std::size_t>(a.size()));
  }

  std::shared_ptr<const PackedLinear> linear(const std::string& name, int32_t rows, int32_t cols) {
    py::handle obj = get(name);
    if (!py::isinstance<PackedLinear>(obj))
      throw py::type_error(name + ": expected a PackedLinear, got " + std::string(py::str(py::type::of(obj))));
    auto p = obj.cast<std::shared_ptr<PackedLinear>>();
    if (p->rows() != rows || p->cols() != cols)
      throw py::value_error(name + ": expected shape (" + std::to_string(rows) + ", " + std::to_string(cols) +
                            "), got (" + std::to_string(p->rows()) + ", " + std::to_string(p->cols()) + ")");
    return p;
  }

  void reject_unused() const {
    std::string extra;
    for (auto item : tensors_) {
      const std::string key = py::str(item.first);
      if (!used_.count(key)) extra += (extra.empty() ? "" : ", ") + key;
    }
    if (!extra.empty()) throw py::value_error("encoder tensors: unexpected names for this config: " + extra);
  }

 private:
  py::handle get(const std::string& name) {
    if (!tensors_.contains(name)) throw py::value_error("encoder tensors: missing '" + name + "'");
    used_.insert(name);
    return tensors_[py::str(name)];
  }

  const py::dict& tensors_;
  std::set<std::string> used_;
};

std::unique_ptr<Encoder> build_encoder(const py::dict& config, const py::dict& tensors, int num_threads,
                                       const std::string& isa) {
  if (num_threads < 1 || num_threads > 1024)
    throw py::value_error("num_threads must be in [1, 1024], got " + std::to_string(num_threads));
  const EncoderConfig cfg = parse_config(config);
  const int32_t h = cfg.hidden;
  TensorSource src(tensors);

  EmbeddingTables emb;
  emb.hidden = h;
  emb.vocab = cfg.vocab;
  emb.positions = cfg.max_positions;
  emb.token_types = cfg.type_vocab;
  emb.eps = cfg.layer_norm_eps;
  src.copy_array("embeddings.word_embeddings", {cfg.vocab, h}, emb.word);
  src.copy_array("embeddings.position_embeddings", {cfg.max_positions, h}, emb.position);
  src.copy_array("embeddings.token_type_embeddings", {cfg.type_vocab, h}, emb.token_type);
  src.copy_array("embeddings.layer_norm.weight", {h}, emb.gamma);
  src.copy_array("embeddings.layer_norm.bias", {h}, emb.beta);

  // Structured compaction keeps some heads and neurons per layer (optional lists; default: all of them).
  const std::vector<int32_t> kept_heads = per_layer(config, "layer_heads", cfg.layers, cfg.heads);
  const std::vector<int32_t> kept_neurons = per_layer(config, "layer_intermediate", cfg.layers, cfg.intermediate);
  const int32_t head_dim = h / cfg.heads;
  std::vector<EncoderLayer> layers(cfg.layers);
  for (int32_t i = 0; i < cfg.layers; ++i) {
    const std::string p = "layers." + std::to_string(i) + ".";
    EncoderLayer& l = layers[i];
    l.heads = kept_heads[i];
    l.intermediate = kept_neurons[i];
    const int32_t attn_width = l.heads * head_dim;
    l.qkv = src.linear(p + "attention.qkv", 3 * attn_width, h);
    l.attn_out = src.linear(p + "attention.output", h, attn_width);
    src.copy_array(p + "attention.layer_norm.weight", {h}, l.attn_ln.gamma);
    src.copy_array(p + "attention.layer_norm.bias", {h}, l.attn_ln.beta);
    l.ffn_up = src.linear(p + "ffn.up", l.intermediate, h);
    l.ffn_down = src.linear(p + "ffn.down", h, l.intermediate);
    src.copy_array(p + "ffn.layer_norm.weight", {h}, l.ffn_ln.gamma);
    src.copy_array(p + "ffn.layer_norm.bias", {h}, l.ffn_ln.beta);
  }
  std::shared_ptr<const PackedLinear> pooler, head;
  if (cfg.has_pooler) pooler = src.linear("pooler", h, h);
  if (cfg.head == Head::kSequenceClassification) head = src.linear("classifier", cfg.num_labels, h);
  if (cfg.head == Head::kQuestionAnswering) head = src.linear("qa_outputs", 2, h);
  if (cfg.head == Head::kTokenClassification) head = src.linear("classifier", cfg.num_labels, h);
  src.reject_unused();
  return std::make_unique<Encoder>(cfg, std::move(emb), std::move(layers), pooler, head, num_threads, isa);
}

py::array_t<int32_t, py::array::c_style> input_array(const py::handle& obj, const char* name) {
  auto a = checked_array<int32_t>(obj, name);
  check_shape(a, {-1, -1}, name);
  return a;
}

// Hands a C++ output to numpy without copying: the array owns the vector through a capsule.
py::array to_numpy(Output&& out) {
  auto* data = new std::vector<float>(std::move(out.data));
  py::capsule owner(data, [](void* p) { delete static_cast<std::vector<float>*>(p); });
  std::vector<py::ssize_t> shape(out.shape.begin(), out.shape.end());
  return py::array_t<float>(shape, data->data(), owner);
}

}  // namespace

void register_encoder(py::module_& m) {
  py::class_<Encoder>(m, "Encoder", "The BERT encoder with packed weights, run in C++.")
      .def(py::init(&build_encoder), py::arg("config"), py::arg("tensors"), py::arg("num_threads"), py::arg("isa"))
      .def(
          "run",
          [](Encoder& e, const py::handle& ids, const py::handle& mask, const py::handle& types,
             bool hidden_states) {
            auto a = input_array(ids, "input_ids");
            auto b = input_array(mask, "attention_mask");
            auto c = input_array(types, "token_type_ids");
            if (b.shape(0) != a.shape(0) || b.shape(1) != a.shape(1) || c.shape(0) != a.shape(0) ||
                c.shape(1) != a.shape(1))
              throw py::value_error("input_ids, attention_mask and token_type_ids must have the same shape");
            if (a.shape(0) > std::numeric_limits<int32_t>::max() || a.shape(1) > std::numeric_limits<int32_t>::max())
              throw py::value_error("input too large");
            std::map<std::string, Output> out;
            {
              py::gil_scoped_release release;
              out = e.run(a.data(), b.data(), c.data(), static_cast<int32_t>(a.shape(0)),
                          static_cast<int32_t>(a.shape(1)), hidden_states);
            }
            py::dict result;
            for (auto& kv : out) result[py::str(kv.first)] = to_numpy(std::move(kv.second));
            return result;
          },
          py::arg("input_ids"), py::arg("attention_mask"), py::arg("token_type_ids"),
          py::arg("hidden_states") = false)
      .def_property("profiling", &Encoder::profiling, &Encoder::set_profiling,
                    "When True, run() times each op; read the times with last_profile().")
      .def("last_profile", &Encoder::last_profile,
           "[(op, milliseconds)] of the last profiled run, each op summed over layers.")
      .def_property_readonly("isa", &Encoder::isa)
      .def_property_readonly("num_threads", &Encoder::num_threads);
}

}  // namespace sparsebert
