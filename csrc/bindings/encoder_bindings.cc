// sparsebert._core.Encoder and encoder_spec: Python config dicts and numpy weights in, numpy outputs back. The
// rules (config schema, weight names and shapes, input ranges) live in csrc/encoder/.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <limits>
#include <string>

#include "bindings/bindings.h"
#include "bindings/numpy_args.h"
#include "bindings/without_gil.h"
#include "encoder/builder.h"
#include "encoder/encoder_spec.h"

namespace sparsebert {
namespace {

ConfigValue config_value(const py::handle& v) {
  if (py::isinstance<py::bool_>(v)) return v.cast<bool>();
  if (py::isinstance<py::int_>(v)) {
    try {
      return v.cast<int64_t>();
    } catch (const py::cast_error&) {
      return Other{};  // beyond int64: no bound admits it, and the schema says which key it was
    }
  }
  if (py::isinstance<py::float_>(v)) return v.cast<double>();
  if (py::isinstance<py::str>(v)) return v.cast<std::string>();
  if (py::isinstance<py::list>(v)) {
    std::vector<int64_t> out;
    for (py::handle item : v) {
      const ConfigValue x = config_value(item);
      if (!std::holds_alternative<int64_t>(x)) return Other{};
      out.push_back(std::get<int64_t>(x));
    }
    return out;
  }
  return Other{};
}

ConfigMap config_map(const py::dict& config) {
  ConfigMap out;
  for (auto item : config)
    if (py::isinstance<py::str>(item.first)) out[item.first.cast<std::string>()] = config_value(item.second);
  return out;
}

// The weights by kind; the arrays returned keep the float32 copies alive while the encoder copies them.
EncoderWeights encoder_weights(const py::dict& tensors, std::vector<py::array>& keep) {
  EncoderWeights w;
  for (auto item : tensors) {
    const std::string name = py::str(item.first);
    if (py::isinstance<PackedLinear>(item.second)) {
      w.linears[name] = item.second.cast<std::shared_ptr<PackedLinear>>();
      continue;
    }
    auto a = checked_array<float>(item.second, name);
    keep.push_back(a);
    w.arrays[name] = ArrayView{a.data(), std::vector<int64_t>(a.shape(), a.shape() + a.ndim())};
  }
  return w;
}

std::unique_ptr<Encoder> make_encoder(const py::dict& config, const py::dict& tensors, int num_threads,
                                      const std::string& isa, bool fuse_ffn, int64_t max_batch_tokens,
                                      bool bf16_attention) {
  if (max_batch_tokens < 1 || max_batch_tokens > kMaxTokens)
    throw py::value_error("max_batch_tokens must be in [1, " + std::to_string(kMaxTokens) + "], got " +
                          std::to_string(max_batch_tokens));
  std::vector<py::array> keep;
  EncoderOptions options;
  options.fuse_ffn = fuse_ffn;
  options.max_batch_tokens = static_cast<int32_t>(max_batch_tokens);
  options.bf16_attention = bf16_attention;
  return build_encoder(config_map(config), encoder_weights(tensors, keep), num_threads, isa, options);
}

py::dict spec_dict(const py::dict& config) {
  const EncoderSpec spec = encoder_spec(config_map(config));
  py::dict arrays, linears;
  for (const auto& [name, shape] : spec.arrays) arrays[py::str(name)] = py::tuple(py::cast(shape));
  for (const auto& [name, shape] : spec.linears) linears[py::str(name)] = py::make_tuple(shape.first, shape.second);
  py::dict out;
  out["arrays"] = arrays;
  out["linears"] = linears;
  out["outputs"] = spec.outputs;
  out["max_sequence_length"] = spec.config.max_sequence();
  return out;
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

py::dict to_dict(std::map<std::string, Output>&& out) {
  py::dict result;
  for (auto& kv : out) result[py::str(kv.first)] = to_numpy(std::move(kv.second));
  return result;
}

// Runs the encoder on checked int32 inputs without the GIL (bindings/without_gil.h: Ctrl-C, interpreter exit).
// logits_at: None, or int32 [pairs, 2] (batch, position) pairs for a masked-LM head (the encoder checks values).
std::map<std::string, Output> run_encoder(Encoder& e, const py::handle& ids, const py::handle& mask,
                                          const py::handle& types, bool hidden_states, Profile* profile,
                                          const py::handle& logits_at = py::none()) {
  auto a = input_array(ids, "input_ids");
  auto b = input_array(mask, "attention_mask");
  auto c = input_array(types, "token_type_ids");
  if (b.shape(0) != a.shape(0) || b.shape(1) != a.shape(1) || c.shape(0) != a.shape(0) || c.shape(1) != a.shape(1))
    throw py::value_error("input_ids, attention_mask and token_type_ids must have the same shape");
  if (a.shape(0) > std::numeric_limits<int32_t>::max() || a.shape(1) > std::numeric_limits<int32_t>::max())
    throw py::value_error("inputs hold more tokens than one call takes (" + std::to_string(kMaxTokens) + ")");
  const auto batch = static_cast<int32_t>(a.shape(0)), seq = static_cast<int32_t>(a.shape(1));
  py::array_t<int32_t, py::array::c_style> pairs;
  LogitsAt at;
  if (!logits_at.is_none()) {
    pairs = checked_array<int32_t>(logits_at, "logits_at");
    check_shape(pairs, {-1, 2}, "logits_at");
    at = LogitsAt{pairs.data(), static_cast<int64_t>(pairs.shape(0))};
  }
  return call_without_gil([&](const std::atomic<bool>* cancel) {
    return e.run(a.data(), b.data(), c.data(), batch, seq, hidden_states, profile, cancel,
                 logits_at.is_none() ? nullptr : &at);
  });
}

py::dict run(Encoder& e, const py::handle& ids, const py::handle& mask, const py::handle& types,
             bool hidden_states, const py::handle& logits_at) {
  return to_dict(run_encoder(e, ids, mask, types, hidden_states, nullptr, logits_at));
}

py::tuple run_profiled(Encoder& e, const py::handle& ids, const py::handle& mask, const py::handle& types) {
  Profile profile;
  py::dict out = to_dict(run_encoder(e, ids, mask, types, false, &profile));
  return py::make_tuple(out, py::cast(profile));
}

}  // namespace

void register_encoder(py::module_& m) {
  m.def("encoder_spec", &spec_dict, py::arg("config"),
        "What an encoder with this config is made of: {'arrays': {name: shape}, 'linears': {name: (rows, cols)}, "
        "'outputs': [name], 'max_sequence_length': int}. ValueError listing every problem of a bad config.");
  py::dict limits;
  for (const IntKey& k : config_int_keys()) limits[k.key] = py::make_tuple(k.lo, k.hi);
  m.attr("CONFIG_LIMITS") = limits;
  py::dict choices;
  for (const ChoiceKey& k : config_choice_keys()) choices[k.key] = py::cast(std::vector<std::string>(
                                                                     k.values.begin(), k.values.end()));
  m.attr("CONFIG_CHOICES") = choices;
  m.attr("MAX_THREADS") = kMaxThreads;
  m.attr("MAX_TOKENS") = kMaxTokens;
  m.attr("QA_OUTPUTS") = kQaOutputs;
  m.attr("DEFAULT_MAX_BATCH_TOKENS") = kDefaultMaxBatchTokens;

  py::class_<Encoder>(m, "Encoder", "The BERT encoder with packed weights, run in C++.")
      .def(py::init(&make_encoder), py::arg("config"), py::arg("tensors"), py::arg("num_threads"), py::arg("isa"),
           py::arg("fuse_ffn") = true, py::arg("max_batch_tokens") = kDefaultMaxBatchTokens,
           py::arg("bf16_attention") = false)
      .def("run", &run, py::arg("input_ids"), py::arg("attention_mask"), py::arg("token_type_ids"),
           py::arg("hidden_states") = false, py::arg("logits_at") = py::none())
      .def("run_profiled", &run_profiled, py::arg("input_ids"), py::arg("attention_mask"),
           py::arg("token_type_ids"),
           "(outputs, [(op, milliseconds)]): run() with this call's op times, each op summed over layers.")
      .def_property_readonly("isa", &Encoder::isa)
      .def_property_readonly("bf16_attention", &Encoder::bf16_attention)
      .def_property_readonly("num_threads", &Encoder::num_threads)
      .def_property_readonly("max_sequence_length", [](const Encoder& e) { return e.config().max_sequence(); })
      .def_property_readonly("max_batch_tokens", &Encoder::max_batch_tokens);
}

}  // namespace sparsebert
