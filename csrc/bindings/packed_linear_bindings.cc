// sparsebert._core.PackedLinear: a packed weight matrix usable on its own (the kernel API) and as an encoder
// weight.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <chrono>
#include <limits>
#include <cstring>
#include <memory>

#include "bindings/bindings.h"
#include "bindings/numpy_args.h"
#include "common/tile_matrix.h"
#include "encoder/thread_pool.h"
#include "kernels/dispatch.h"
#include "ops/packed_linear.h"

namespace sparsebert {
namespace {

int32_t checked_dim(int64_t v, const char* what) {
  if (v <= 0 || v > std::numeric_limits<int32_t>::max())
    throw py::value_error(std::string(what) + " must be in [1, 2^31), got " + std::to_string(v));
  return static_cast<int32_t>(v);
}

const float* optional_bias(const py::object& bias, int32_t rows, py::array_t<float, py::array::c_style>& keep) {
  if (bias.is_none()) return nullptr;
  keep = checked_array<float>(bias, "bias");
  check_shape(keep, {rows}, "bias");
  return keep.data();
}

// Copies a [features][tokens] numpy matrix into tiles.
void to_tiles(const py::array_t<float, py::array::c_style>& a, TileMatrix& m) {
  const int32_t features = static_cast<int32_t>(a.shape(0)), tokens = static_cast<int32_t>(a.shape(1));
  m.resize(features, tokens);
  const float* src = a.data();
  for (int32_t f = 0; f < features; ++f)
    for (int32_t t = 0; t < tokens; ++t) m.at(f, t) = src[static_cast<int64_t>(f) * tokens + t];
}

}  // namespace

Activation parse_activation(const std::string& name) {
  if (name == "none") return Activation::kNone;
  if (name == "gelu") return Activation::kGelu;
  if (name == "gelu_tanh" || name == "gelu_new" || name == "gelu_pytorch_tanh") return Activation::kGeluTanh;
  if (name == "relu") return Activation::kRelu;
  if (name == "tanh") return Activation::kTanh;
  throw py::value_error("unknown activation '" + name +
                        "' (known: none, gelu, gelu_tanh, gelu_new, gelu_pytorch_tanh, relu, tanh)");
}

void register_packed_linear(py::module_& m) {
  m.def(
      "quantize_activations",
      [](const py::handle& x, const py::object& isa) {
        auto xa = checked_array<float>(x, "x");
        check_shape(xa, {-1, -1}, "x");
        const int32_t k = checked_dim(xa.shape(0), "features"), n = checked_dim(xa.shape(1), "tokens");
        const KernelTable& kernels = kernels_for(isa.is_none() ? default_isa() : isa.cast<std::string>());
        TileMatrix tiles;
        to_tiles(xa, tiles);
        const int32_t blocks = (k + 3) / 4;
        py::array_t<uint8_t> q({static_cast<py::ssize_t>(blocks), static_cast<py::ssize_t>(n), py::ssize_t{4}});
        py::array_t<float> scale(n);
        py::array_t<int32_t> zero(n);
        AlignedBuffer<uint8_t> tile_q;
        AlignedBuffer<float> tile_scale;
        AlignedBuffer<int32_t> tile_zero;
        tile_q.reset(static_cast<std::size_t>(blocks) * kTileTokens * 4);
        tile_scale.reset(kTileTokens);
        tile_zero.reset(kTileTokens);
        for (int32_t t = 0; t < tiles.num_tiles(); ++t) {
          const int32_t count = tiles.tokens_in_tile(t), t0 = t * kTileTokens;
          kernels.quantize(k, count, tiles.tile(t), kTileTokens, tile_q.data(), kTileTokens, tile_scale.data(),
                           tile_zero.data());
          for (int32_t b = 0; b < blocks; ++b)
            std::memcpy(q.mutable_data(b, t0, 0), tile_q.data() + (static_cast<int64_t>(b) * kTileTokens) * 4,
                        static_cast<std::size_t>(count) * 4);
          std::memcpy(scale.mutable_data(t0), tile_scale.data(), count * sizeof(float));
          std::memcpy(zero.mutable_data(t0), tile_zero.data(), count * sizeof(int32_t));
        }
        return py::make_tuple(q, scale, zero);
      },
      py::arg("x"), py::arg("isa") = py::none(),
      "The int8 kernels' activation quantization of x [features, tokens] float32: (q [ceil(features / 4), "
      "tokens, 4] uint8, scale [tokens] float32, zero [tokens] int32), x ~= scale * (q - zero).");
  py::class_<PackedLinear, std::shared_ptr<PackedLinear>>(m, "PackedLinear",
                                                          "A packed weight matrix W [rows, cols] and bias.")
      .def_static(
          "dense",
          [](const py::handle& weight, const py::object& bias) {
            auto w = checked_array<float>(weight, "weight");
            check_shape(w, {-1, -1}, "weight");
            const int32_t rows = checked_dim(w.shape(0), "rows"), cols = checked_dim(w.shape(1), "cols");
            py::array_t<float, py::array::c_style> b;
            return PackedLinear::dense(rows, cols, w.data(), optional_bias(bias, rows, b));
          },
          py::arg("weight"), py::arg("bias") = py::none())
      .def_static(
          "unstructured",
          [](int64_t n_rows, int64_t n_cols, const py::handle& row_ptr, const py::handle& col_idx,
             const py::handle& values, const py::object& bias) {
            const int32_t rows = checked_dim(n_rows, "n_rows"), cols = checked_dim(n_cols, "n_cols");
            auto ptr = checked_array<int32_t>(row_ptr, "row_ptr");
            auto idx = checked_array<uint16_t>(col_idx, "col_idx");
            auto val = checked_array<float>(values, "values");
            check_shape(ptr, {-1}, "row_ptr");
            check_shape(idx, {-1}, "col_idx");
            check_shape(val, {idx.shape(0)}, "values");
            py::array_t<float, py::array::c_style> b;
            const float* bp = optional_bias(bias, rows, b);
            return PackedLinear::unstructured(rows, cols, ptr.data(), ptr.shape(0), idx.data(), val.data(),
                                              idx.shape(0), bp);
          },
          py::arg("n_rows"), py::arg("n_cols"), py::arg("row_ptr"), py::arg("col_idx"), py::arg("values"),
          py::arg("bias") = py::none())
      .def_static(
          "block4",
          [](int64_t n_rows, int64_t n_cols, const py::handle& block_ptr, const py::handle& block_col,
             const py::handle& values, const py::object& bias) {
            const int32_t rows = checked_dim(n_rows, "n_rows"), cols = checked_dim(n_cols, "n_cols");
            auto ptr = checked_array<int32_t>(block_ptr, "block_ptr");
            auto idx = checked_array<uint16_t>(block_col, "block_col");
            auto val = checked_array<float>(values, "block_values");
            check_shape(ptr, {-1}, "block_ptr");
            check_shape(idx, {-1}, "block_col");
            check_shape(val, {idx.shape(0), 4}, "block_values");
            py::array_t<float, py::array::c_style> b;
            const float* bp = optional_bias(bias, rows, b);
            return PackedLinear::block4(rows, cols, ptr.data(), ptr.shape(0), idx.data(), val.data(), idx.shape(0),
                                        bp);
          },
          py::arg("n_rows"), py::arg("n_cols"), py::arg("block_ptr"), py::arg("block_col"), py::arg("values"),
          py::arg("bias") = py::none())
      .def_static(
          "block4_int8",
          [](int64_t n_rows, int64_t n_cols, const py::handle& block_ptr, const py::handle& block_col,
             const py::handle& values, const py::handle& scales, const py::object& bias) {
            const int32_t rows = checked_dim(n_rows, "n_rows"), cols = checked_dim(n_cols, "n_cols");
            auto ptr = checked_array<int32_t>(block_ptr, "block_ptr");
            auto idx = checked_array<uint16_t>(block_col, "block_col");
            auto val = checked_array<int8_t>(values, "block_values");
            auto sc = checked_array<float>(scales, "scales");
            check_shape(ptr, {-1}, "block_ptr");
            check_shape(idx, {-1}, "block_col");
            check_shape(val, {idx.shape(0), 4}, "block_values");
            check_shape(sc, {rows}, "scales");
            py::array_t<float, py::array::c_style> b;
            const float* bp = optional_bias(bias, rows, b);
            return PackedLinear::block4_int8(rows, cols, ptr.data(), ptr.shape(0), idx.data(), val.data(),
                                             idx.shape(0), sc.data(), bp);
          },
          py::arg("n_rows"), py::arg("n_cols"), py::arg("block_ptr"), py::arg("block_col"), py::arg("values"),
          py::arg("scales"), py::arg("bias") = py::none(),
          "s8 4-block weights (values [blocks, 4] int8) with one scale per row, run on u8 activations quantized "
          "per token.")
      .def_property_readonly("layout", [](const PackedLinear& p) { return layout_name(p.layout()); })
      .def_property_readonly("rows", &PackedLinear::rows)
      .def_property_readonly("cols", &PackedLinear::cols)
      .def_property_readonly("shape", [](const PackedLinear& p) { return py::make_tuple(p.rows(), p.cols()); })
      .def_property_readonly("nnz", &PackedLinear::stored_weights,
                             "Weights stored (including the zero fill of partial 4-blocks).")
      .def_property_readonly("nbytes", &PackedLinear::nbytes)
      .def(
          "matmul",
          [](const PackedLinear& p, const py::handle& x, const std::string& activation, const py::object& residual,
             const py::object& isa, int num_threads) {
            auto xa = checked_array<float>(x, "x");
            check_shape(xa, {p.cols(), -1}, "x");
            if (xa.shape(1) < 1 || xa.shape(1) > std::numeric_limits<int32_t>::max() / 4)
              throw py::value_error("x: need at least one token column");
            if (num_threads < 1 || num_threads > 1024)
              throw py::value_error("num_threads must be in [1, 1024], got " + std::to_string(num_threads));
            const Activation act = parse_activation(activation);
            const KernelTable& kernels = kernels_for(isa.is_none() ? default_isa() : isa.cast<std::string>());
            const int32_t tokens = static_cast<int32_t>(xa.shape(1));
            py::array_t<float, py::array::c_style> ra;
            if (!residual.is_none()) {
              ra = checked_array<float>(residual, "residual");
              check_shape(ra, {p.rows(), tokens}, "residual");
            }
            TileMatrix xt, yt, rt;
            to_tiles(xa, xt);
            if (!residual.is_none()) to_tiles(ra, rt);
            py::array_t<float> out({static_cast<py::ssize_t>(p.rows()), static_cast<py::ssize_t>(tokens)});
            float* dst = out.mutable_data();
            {
              py::gil_scoped_release release;
              ThreadPool pool(num_threads);
              p.forward(kernels, pool, xt, yt, act, residual.is_none() ? nullptr : &rt);
              for (int32_t r = 0; r < p.rows(); ++r)
                for (int32_t t = 0; t < tokens; ++t) dst[static_cast<int64_t>(r) * tokens + t] = yt.at(r, t);
            }
            return out;
          },
          py::arg("x"), py::arg("activation") = "none", py::arg("residual") = py::none(),
          py::arg("isa") = py::none(), py::arg("num_threads") = 1,
          "act(W @ x + bias[:, None]) (+ residual) for x of shape [cols, tokens], float32.")
      .def(
          "benchmark",
          [](const PackedLinear& p, int64_t tokens, int runs, const py::object& isa, int num_threads,
             const std::string& activation, int warmup, const py::object& x_values) {
            if (tokens < 1 || tokens > (1 << 20)) throw py::value_error("tokens must be in [1, 2^20]");
            if (runs < 1 || runs > 100000) throw py::value_error("runs must be in [1, 100000]");
            if (num_threads < 1 || num_threads > 1024) throw py::value_error("num_threads must be in [1, 1024]");
            if (warmup < 0 || warmup > 1000) throw py::value_error("warmup must be in [0, 1000]");
            const Activation act = parse_activation(activation);
            const KernelTable& kernels = kernels_for(isa.is_none() ? default_isa() : isa.cast<std::string>());
            py::array_t<double> seconds(runs);
            double* out = seconds.mutable_data();
            // y allocated (and its pages touched) up front, so even an unwarmed run times only the kernel.
            TileMatrix x(p.cols(), static_cast<int32_t>(tokens)), y(p.rows(), static_cast<int32_t>(tokens));
            if (!x_values.is_none()) {
              auto xa = checked_array<float>(x_values, "x");
              check_shape(xa, {p.cols(), static_cast<int64_t>(tokens)}, "x");
              to_tiles(xa, x);
            } else {
              // Deterministic, finite, non-zero activations.
              for (int32_t f = 0; f < p.cols(); ++f)
                for (int32_t t = 0; t < tokens; ++t) x.at(f, t) = static_cast<float>((f * 31 + t * 17) % 97) / 97.0f - 0.5f;
            }
            {
              py::gil_scoped_release release;
              ThreadPool pool(num_threads);
              for (int i = 0; i < warmup; ++i) p.forward(kernels, pool, x, y, act);
              for (int i = 0; i < runs; ++i) {
                const auto t0 = std::chrono::steady_clock::now();
                p.forward(kernels, pool, x, y, act);
                out[i] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
              }
            }
            return seconds;
          },
          py::arg("tokens"), py::arg("runs") = 20, py::arg("isa") = py::none(), py::arg("num_threads") = 1,
          py::arg("activation") = "none", py::arg("warmup") = 2, py::arg("x") = py::none(),
          "Times forward() alone (activations already in the engine's layout) over `tokens` tokens: an array of "
          "seconds per run, after `warmup` untimed runs. `x` ([cols, tokens] float32) replaces the synthetic "
          "activations.")
      .def("__repr__", [](const PackedLinear& p) {
        return "<PackedLinear " + std::string(layout_name(p.layout())) + " [" + std::to_string(p.rows()) + ", " +
               std::to_string(p.cols()) + "] stored=" + std::to_string(p.stored_weights()) + ">";
      });
}

}  // namespace sparsebert
