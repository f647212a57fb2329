// sparsebert._core.PackedLinear: a packed weight matrix usable on its own (the kernel API) and as an encoder
// weight. Constructors validate in C++ (ops/packed_linear.h); here numpy arrays are checked and converted.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <chrono>
#include <cstring>
#include <limits>
#include <memory>

#include "bindings/bindings.h"
#include "bindings/numpy_args.h"
#include "common/thread_pool.h"
#include "common/tile_matrix.h"
#include "encoder/encoder_spec.h"
#include "ops/packed_arrays.h"
#include "ops/packed_linear.h"

namespace sparsebert {
namespace {

using FloatArray = py::array_t<float, py::array::c_style>;
using Linear = std::shared_ptr<PackedLinear>;

int32_t checked_dim(int64_t v, const char* what) {
  if (v <= 0 || v > std::numeric_limits<int32_t>::max())
    throw py::value_error(std::string(what) + " must be in [1, 2^31), got " + std::to_string(v));
  return static_cast<int32_t>(v);
}

int checked_threads(int num_threads) {
  if (num_threads < 1 || num_threads > kMaxThreads)
    throw py::value_error("num_threads must be in [1, " + std::to_string(kMaxThreads) + "], got " +
                          std::to_string(num_threads));
  return num_threads;
}

const float* optional_bias(const py::object& bias, int32_t rows, FloatArray& keep) {
  if (bias.is_none()) return nullptr;
  keep = checked_array<float>(bias, "bias");
  check_shape(keep, {rows}, "bias");
  return keep.data();
}

// Copies a [features][tokens] numpy matrix into tiles.
void to_tiles(const FloatArray& a, TileMatrix& m) {
  const int32_t features = static_cast<int32_t>(a.shape(0)), tokens = static_cast<int32_t>(a.shape(1));
  m.resize(features, tokens);
  const float* src = a.data();
  for (int32_t f = 0; f < features; ++f)
    for (int32_t t = 0; t < tokens; ++t) m.at(f, t) = src[static_cast<int64_t>(f) * tokens + t];
}

PackOptions pack_options(int kblock_cols, int group_panels) {
  if (kblock_cols < 0) throw py::value_error("kblock_cols must be >= 0 (0: chosen from the matrix)");
  if (group_panels < -1) throw py::value_error("group_panels must be >= -1 (-1: chosen, 0: one group)");
  return PackOptions{kblock_cols, group_panels};
}

// ---- constructors

Linear make_dense(const py::handle& weight, const py::object& bias) {
  auto w = checked_array<float>(weight, "weight");
  check_shape(w, {-1, -1}, "weight");
  const int32_t rows = checked_dim(w.shape(0), "rows"), cols = checked_dim(w.shape(1), "cols");
  FloatArray b;
  return PackedLinear::dense(rows, cols, w.data(), optional_bias(bias, rows, b));
}

// A layout's pointer and index arrays, checked as 1-D and kept alive with the call.
struct Compressed {
  Compressed(const py::handle& ptr_obj, const py::handle& idx_obj, const char* ptr_name, const char* idx_name)
      : ptr(checked_array<int32_t>(ptr_obj, ptr_name)), idx(checked_array<uint16_t>(idx_obj, idx_name)) {
    check_shape(ptr, {-1}, ptr_name);
    check_shape(idx, {-1}, idx_name);
  }
  CompressedRows view() const { return CompressedRows{ptr.data(), ptr.shape(0), idx.data(), idx.shape(0)}; }
  py::array_t<int32_t, py::array::c_style> ptr;
  py::array_t<uint16_t, py::array::c_style> idx;
};

Linear make_unstructured(int64_t n_rows, int64_t n_cols, const py::handle& row_ptr, const py::handle& col_idx,
                         const py::handle& values, const py::object& bias, int kblock_cols, int group_panels) {
  const int32_t rows = checked_dim(n_rows, "n_rows"), cols = checked_dim(n_cols, "n_cols");
  const Compressed c(row_ptr, col_idx, "row_ptr", "col_idx");
  auto val = checked_array<float>(values, "values");
  check_shape(val, {c.idx.shape(0)}, "values");
  FloatArray b;
  const float* bp = optional_bias(bias, rows, b);
  return PackedLinear::unstructured(rows, cols, c.ptr.data(), c.ptr.shape(0), c.idx.data(), val.data(),
                                    c.idx.shape(0), bp, pack_options(kblock_cols, group_panels));
}

Linear make_block4(int64_t n_rows, int64_t n_cols, const py::handle& block_ptr, const py::handle& block_col,
                   const py::handle& values, const py::object& bias, int kblock_cols, int group_panels) {
  const int32_t rows = checked_dim(n_rows, "n_rows"), cols = checked_dim(n_cols, "n_cols");
  const Compressed c(block_ptr, block_col, "block_ptr", "block_col");
  auto val = checked_array<float>(values, "block_values");
  check_shape(val, {c.idx.shape(0), 4}, "block_values");
  FloatArray b;
  const float* bp = optional_bias(bias, rows, b);
  return PackedLinear::block4(rows, cols, c.ptr.data(), c.ptr.shape(0), c.idx.data(), val.data(), c.idx.shape(0),
                              bp, pack_options(kblock_cols, group_panels));
}

Linear make_block4_int8(int64_t n_rows, int64_t n_cols, const py::handle& block_ptr, const py::handle& block_col,
                        const py::handle& values, const py::handle& scales, const py::object& bias) {
  const int32_t rows = checked_dim(n_rows, "n_rows"), cols = checked_dim(n_cols, "n_cols");
  const Compressed c(block_ptr, block_col, "block_ptr", "block_col");
  auto val = checked_array<int8_t>(values, "block_values");
  auto sc = checked_array<float>(scales, "scales");
  check_shape(val, {c.idx.shape(0), 4}, "block_values");
  check_shape(sc, {rows}, "scales");
  FloatArray b;
  const float* bp = optional_bias(bias, rows, b);
  return PackedLinear::block4_int8(rows, cols, c.ptr.data(), c.ptr.shape(0), c.idx.data(), val.data(),
                                   c.idx.shape(0), sc.data(), bp);
}

// The index invariants of a file's arrays (ops/packed_arrays.h) without packing them; the caller (format/)
// has checked the arrays' names, dtypes and shapes.
void check_packed_arrays(const std::string& layout, int64_t n_rows, int64_t n_cols, const py::dict& arrays) {
  const int32_t rows = checked_dim(n_rows, "n_rows"), cols = checked_dim(n_cols, "n_cols");
  auto get = [&](const char* key) -> py::handle {
    if (!arrays.contains(key)) throw py::value_error(layout + ": missing array '" + key + "'");
    return arrays[key];
  };
  if (layout == "dense") return check_dense(rows, cols);
  const bool unstructured = layout == "unstructured";
  if (!unstructured && layout != "block4" && layout != "block4_int8")
    throw py::value_error("unknown layout '" + layout + "' (known: dense, unstructured, block4, block4_int8)");
  const Compressed held(get(unstructured ? "row_ptr" : "block_ptr"), get(unstructured ? "col_idx" : "block_col"),
                        "pointer array", "index array");
  const CompressedRows c = held.view();
  if (unstructured) return check_unstructured(rows, cols, c);
  if (layout == "block4") {
    auto val = checked_array<float>(get("block_values"), "block_values");
    check_shape(val, {c.entries, 4}, "block_values");
    return check_block4(rows, cols, c, val.data());
  }
  auto val = checked_array<int8_t>(get("block_values"), "block_values");
  auto scales = checked_array<float>(get("scales"), "scales");
  check_shape(val, {c.entries, 4}, "block_values");
  check_shape(scales, {rows}, "scales");
  check_block4_int8(rows, cols, c, val.data(), scales.data());
}

// ---- running

py::array matmul(const PackedLinear& p, const py::handle& x, const std::string& activation,
                 const py::object& residual, const py::object& isa, int num_threads) {
  auto xa = checked_array<float>(x, "x");
  check_shape(xa, {p.cols(), -1}, "x");
  if (xa.shape(1) < 1 || xa.shape(1) > kMaxTokens) throw py::value_error("x: need at least one token column");
  checked_threads(num_threads);
  const Activation act = parse_activation(activation);
  const KernelTable& kernels = table_for(isa);
  const int32_t tokens = static_cast<int32_t>(xa.shape(1));
  FloatArray ra;
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
}

py::array benchmark(const PackedLinear& p, int64_t tokens, int runs, const py::object& isa, int num_threads,
                    const std::string& activation, int warmup, const py::object& x_values) {
  if (tokens < 1 || tokens > (1 << 20)) throw py::value_error("tokens must be in [1, 2^20]");
  if (runs < 1 || runs > 100000) throw py::value_error("runs must be in [1, 100000]");
  if (warmup < 0 || warmup > 1000) throw py::value_error("warmup must be in [0, 1000]");
  checked_threads(num_threads);
  const Activation act = parse_activation(activation);
  const KernelTable& kernels = table_for(isa);
  py::array_t<double> seconds(runs);
  double* out = seconds.mutable_data();
  // y allocated (and its pages touched) up front, so even an unwarmed run times only the kernel.
  TileMatrix x(p.cols(), static_cast<int32_t>(tokens)), y(p.rows(), static_cast<int32_t>(tokens));
  if (!x_values.is_none()) {
    auto xa = checked_array<float>(x_values, "x");
    check_shape(xa, {p.cols(), tokens}, "x");
    to_tiles(xa, x);
  } else {
    // Deterministic, finite, non-zero activations.
    for (int32_t f = 0; f < p.cols(); ++f)
      for (int32_t t = 0; t < tokens; ++t) x.at(f, t) = static_cast<float>((f * 31 + t * 17) % 97) / 97.0f - 0.5f;
  }
  py::gil_scoped_release release;
  ThreadPool pool(num_threads);
  for (int i = 0; i < warmup; ++i) p.forward(kernels, pool, x, y, act);
  for (int i = 0; i < runs; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    p.forward(kernels, pool, x, y, act);
    out[i] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  return seconds;
}

std::string repr(const PackedLinear& p) {
  return "<PackedLinear " + std::string(layout_name(p.layout())) + " [" + std::to_string(p.rows()) + ", " +
         std::to_string(p.cols()) + "] stored=" + std::to_string(p.stored_weights()) + ">";
}

}  // namespace

void register_packed_linear(py::module_& m) {
  m.def("check_packed_arrays", &check_packed_arrays, py::arg("layout"), py::arg("n_rows"), py::arg("n_cols"),
        py::arg("arrays"),
        "ValueError naming the first index invariant a packed linear's arrays break (what every constructor "
        "checks), without packing them.");
  m.attr("MAX_SPARSE_COLS") = kMaxSparseCols;
  m.attr("INT8_MAX_COLS") = kInt8MaxCols;
  py::class_<PackedLinear, Linear>(m, "PackedLinear", "A packed weight matrix W [rows, cols] and bias.")
      .def_static("dense", &make_dense, py::arg("weight"), py::arg("bias") = py::none())
      .def_static("unstructured", &make_unstructured, py::arg("n_rows"), py::arg("n_cols"), py::arg("row_ptr"),
                  py::arg("col_idx"), py::arg("values"), py::arg("bias") = py::none(), py::kw_only(),
                  py::arg("kblock_cols") = 0, py::arg("group_panels") = -1,
                  "kblock_cols / group_panels override the K-block width and the panels per row group (tuning).")
      .def_static("block4", &make_block4, py::arg("n_rows"), py::arg("n_cols"), py::arg("block_ptr"),
                  py::arg("block_col"), py::arg("values"), py::arg("bias") = py::none(), py::kw_only(),
                  py::arg("kblock_cols") = 0, py::arg("group_panels") = -1)
      .def_static("block4_int8", &make_block4_int8, py::arg("n_rows"), py::arg("n_cols"), py::arg("block_ptr"),
                  py::arg("block_col"), py::arg("values"), py::arg("scales"), py::arg("bias") = py::none(),
                  "s8 4-block weights (values [blocks, 4] int8) with one scale per row, run on u8 activations "
                  "quantized per token.")
      .def_property_readonly("layout", [](const PackedLinear& p) { return layout_name(p.layout()); })
      .def_property_readonly("rows", &PackedLinear::rows)
      .def_property_readonly("cols", &PackedLinear::cols)
      .def_property_readonly("shape", [](const PackedLinear& p) { return py::make_tuple(p.rows(), p.cols()); })
      .def_property_readonly("nnz", &PackedLinear::stored_weights,
                             "Weights stored (including the zero fill of partial 4-blocks).")
      .def_property_readonly("nbytes", &PackedLinear::nbytes)
      .def_property_readonly("kblock_cols", &PackedLinear::kblock_cols, "Input columns per K-block (sparse float).")
      .def_property_readonly("group_rows", &PackedLinear::group_rows, "Rows per row group (sparse float).")
      .def("matmul", &matmul, py::arg("x"), py::arg("activation") = "none", py::arg("residual") = py::none(),
           py::arg("isa") = py::none(), py::arg("num_threads") = 1,
           "act(W @ x + bias[:, None]) (+ residual) for x of shape [cols, tokens], float32.")
      .def("benchmark", &benchmark, py::arg("tokens"), py::arg("runs") = 20, py::arg("isa") = py::none(),
           py::arg("num_threads") = 1, py::arg("activation") = "none", py::arg("warmup") = 2,
           py::arg("x") = py::none(),
           "Times forward() alone (activations already in the engine's layout) over `tokens` tokens: an array of "
           "seconds per run, after `warmup` untimed runs. `x` ([cols, tokens] float32) replaces the synthetic "
           "activations.")
      .def("__repr__", &repr);
}

}  // namespace sparsebert
