// sparsebert._core.Kernels: every entry of one ISA's kernel table, callable on numpy arrays, so that each kernel
// can be tested at the edges of its own contract (kernels.h). Arguments are checked here against that contract
// (indices, shapes, the kept rows of a softmax, the byte pairs an int8 table needs), and every buffer is padded
// to whole 16-lane vectors as the kernels may touch them. KERNELS lists the table's entries.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "bindings/bindings.h"
#include "bindings/kernel_args.h"
#include "bindings/numpy_args.h"
#include "common/aligned_buffer.h"
#include "encoder/encoder_spec.h"
#include "ops/packed_arrays.h"

namespace sparsebert {
namespace {

using kernel_args::EpilogueArgs;
using kernel_args::Rows;
using kernel_args::output;
using kernel_args::padded;

constexpr int64_t kMaxDim = 1 << 20;

int32_t dim(int64_t v, const char* what, int64_t least = 0) {
  if (v < least || v > kMaxDim)
    throw py::value_error(std::string(what) + " must be in [" + std::to_string(least) + ", " +
                          std::to_string(kMaxDim) + "], got " + std::to_string(v));
  return static_cast<int32_t>(v);
}

class Kernels {
 public:
  explicit Kernels(const py::object& isa) : t_(table_for(isa)) {}

  std::string isa() const { return t_.isa; }
  std::string int8_isa() const { return t_.int8_isa; }
  bool int8_bounded_pairs() const { return t_.int8_bounded_pairs; }

  // spmm_csr (width 1) and spmm_block4 (width 4) over a paired view (kernels.h, PairedView).
  py::array spmm(const std::string& name, const py::handle& ptr_a, const py::handle& rows_a, const py::handle& idx_a,
                 const py::handle& val_a, int32_t pair_begin, int32_t pair_end, const py::handle& x_a, int64_t m,
                 const py::object& y_init, const py::object& bias, const py::object& residual, bool accumulate) {
    if (name != "spmm_csr" && name != "spmm_block4") throw py::value_error("spmm takes spmm_csr or spmm_block4");
    const int width = name == "spmm_csr" ? 1 : 4;
    auto ptr = checked_array<int32_t>(ptr_a, "ptr");
    auto rows = checked_array<int32_t>(rows_a, "rows");
    auto idx = checked_array<uint16_t>(idx_a, "idx");
    auto val = checked_array<float>(val_a, "val");
    check_shape(ptr, {-1}, "ptr");
    const int64_t pairs = ptr.shape(0) - 1, entries = idx.size() / 2;
    if (pairs < 0) throw py::value_error("ptr must hold pairs + 1 offsets");
    check_shape(rows, {2 * pairs}, "rows");
    check_shape(idx, {2 * entries}, "idx");
    check_shape(val, {2 * entries * width}, "val");
    auto x_arr = checked_array<float>(x_a, "x");
    check_shape(x_arr, {-1, -1}, "x");
    const int64_t k_rows = x_arr.shape(0), n = dim(x_arr.shape(1), "tokens");
    dim(m, "m");
    if (!(0 <= pair_begin && pair_begin <= pair_end && pair_end <= pairs)) throw py::value_error("pair range");
    for (int64_t p = 0; p < pairs; ++p) {
      if (!(0 <= ptr.data()[p] && ptr.data()[p] <= ptr.data()[p + 1] && ptr.data()[p + 1] <= entries))
        throw py::value_error("ptr must be non-decreasing within [0, entries]");
      if (!(0 <= rows.data()[2 * p] && rows.data()[2 * p] < m && -1 <= rows.data()[2 * p + 1] &&
            rows.data()[2 * p + 1] < m))
        throw py::value_error("rows must be in [0, m) (the second of a pair may be -1)");
    }
    for (int64_t e = 0; e < 2 * entries; ++e)
      if ((static_cast<int64_t>(idx.data()[e]) + 1) * width > k_rows)
        throw py::value_error("idx " + std::to_string(idx.data()[e]) + " reads past the rows of x");
    Rows x(x_a, "x", k_rows, n);
    Rows y = output(y_init, m, n);
    EpilogueArgs e(bias, residual, "none", m, n);
    e.ep.accumulate = accumulate;
    const PairedView view{ptr.data(), rows.data(), idx.data(), val.data()};
    const SpmmFn fn = width == 1 ? t_.spmm_csr : t_.spmm_block4;
    fn(view, pair_begin, pair_end, x.data(), x.ld, y.data(), y.ld, static_cast<int32_t>(n), e.ep);
    return y.to_numpy(m);
  }

  py::array finish_rows(const py::handle& rows_a, const py::handle& y_a, const py::object& bias,
                        const std::string& activation, const py::object& residual) {
    auto rows = checked_array<int32_t>(rows_a, "rows");
    check_shape(rows, {-1}, "rows");
    auto ya = checked_array<float>(y_a, "y");
    check_shape(ya, {-1, -1}, "y");
    const int64_t m = ya.shape(0), n = dim(ya.shape(1), "tokens");
    for (int64_t i = 0; i < rows.size(); ++i)
      if (rows.data()[i] >= m) throw py::value_error("rows must be < the rows of y (negative: skipped)");
    Rows y(y_a, "y", m, n);
    EpilogueArgs e(bias, residual, activation, m, n);
    t_.finish_rows(rows.data(), static_cast<int32_t>(rows.size()), y.data(), y.ld, static_cast<int32_t>(n), e.ep);
    return y.to_numpy(m);
  }

  // gemm with w [m, k]; gemm_wt with w given transposed, [k, m].
  py::array gemm(const std::string& name, const py::handle& w_a, const py::handle& x_a, const py::object& y_init,
                 const py::object& bias, const std::string& activation, const py::object& residual,
                 bool accumulate) {
    if (name != "gemm" && name != "gemm_wt") throw py::value_error("gemm takes gemm or gemm_wt");
    const bool wt = name == "gemm_wt";
    auto w = checked_array<float>(w_a, "w");
    check_shape(w, {-1, -1}, "w");
    auto xa = checked_array<float>(x_a, "x");
    check_shape(xa, {-1, -1}, "x");
    const int64_t m = dim(w.shape(wt ? 1 : 0), "m"), k = dim(w.shape(wt ? 0 : 1), "k");
    const int64_t n = dim(xa.shape(1), "tokens");
    check_shape(xa, {k, n}, "x");
    Rows x(x_a, "x", k, n);
    Rows y = output(y_init, m, n);
    EpilogueArgs e(bias, residual, activation, m, n);
    e.ep.accumulate = accumulate;
    (wt ? t_.gemm_wt : t_.gemm)(static_cast<int32_t>(m), static_cast<int32_t>(n), static_cast<int32_t>(k), w.data(),
                                w.shape(1), x.data(), x.ld, y.data(), y.ld, e.ep);
    return y.to_numpy(m);
  }

  py::array layer_norm(const py::handle& x_a, const py::handle& gamma_a, const py::handle& beta_a, float eps) {
    auto xa = checked_array<float>(x_a, "x");
    check_shape(xa, {-1, -1}, "x");
    const int64_t f = dim(xa.shape(0), "features", 1), n = dim(xa.shape(1), "tokens");
    auto gamma = checked_array<float>(gamma_a, "gamma");
    auto beta = checked_array<float>(beta_a, "beta");
    check_shape(gamma, {f}, "gamma");
    check_shape(beta, {f}, "beta");
    if (!(eps > 0.0f)) throw py::value_error("eps must be > 0");
    Rows x(x_a, "x", f, n), y(f, n);
    t_.layer_norm(static_cast<int32_t>(f), static_cast<int32_t>(n), x.data(), x.ld, y.data(), y.ld, gamma.data(),
                  beta.data(), eps);
    return y.to_numpy(f);
  }

  py::array softmax_cols(const py::handle& s_a, float scale, const py::handle& keep_a) {
    auto sa = checked_array<float>(s_a, "s");
    check_shape(sa, {-1, -1}, "s");
    const int64_t m = dim(sa.shape(0), "rows", 1), n = dim(sa.shape(1), "tokens");
    auto keep = checked_array<uint8_t>(keep_a, "keep");
    check_shape(keep, {m}, "keep");
    if (std::none_of(keep.data(), keep.data() + m, [](uint8_t k) { return k != 0; }))
      throw py::value_error("keep must keep at least one row (the kernel's contract)");
    Rows s(s_a, "s", m, n);
    t_.softmax_cols(static_cast<int32_t>(m), static_cast<int32_t>(n), s.data(), s.ld, scale, keep.data());
    return s.to_numpy(m);
  }

  double fma_peak(int64_t iterations) {
    if (iterations < 0 || iterations > (int64_t{1} << 30)) throw py::value_error("iterations must be in [0, 2^30]");
    float sink[16];
    return t_.fma_peak(iterations, sink);
  }

  // x [k, n] -> (q [ceil(k / 4), n, 4] uint8, scale [n] float32, zero [n] int32), x ~= scale * (q - zero).
  py::tuple quantize(const py::handle& x_a) {
    auto xa = checked_array<float>(x_a, "x");
    check_shape(xa, {-1, -1}, "x");
    const int64_t k = dim(xa.shape(0), "features", 1), n = dim(xa.shape(1), "tokens");
    const int64_t blocks = (k + 3) / 4, ld = padded(n);
    Rows x(x_a, "x", k, n);
    AlignedBuffer<uint8_t> q(static_cast<std::size_t>(blocks * ld * 4));
    AlignedBuffer<float> scale(static_cast<std::size_t>(ld));
    AlignedBuffer<int32_t> zero(static_cast<std::size_t>(ld));
    t_.quantize(static_cast<int32_t>(k), static_cast<int32_t>(n), x.data(), x.ld, q.data(), ld, scale.data(),
                zero.data());
    py::array_t<uint8_t> q_out({static_cast<py::ssize_t>(blocks), static_cast<py::ssize_t>(n), py::ssize_t{4}});
    for (int64_t b = 0; b < blocks; ++b) std::memcpy(q_out.mutable_data(b, 0, 0), q.data() + b * ld * 4, n * 4);
    py::array_t<float> s_out(n);
    py::array_t<int32_t> z_out(n);
    std::memcpy(s_out.mutable_data(), scale.data(), n * sizeof(float));
    std::memcpy(z_out.mutable_data(), zero.data(), n * sizeof(int32_t));
    return py::make_tuple(q_out, s_out, z_out);
  }

  // The int8 4-block product of rows [row_begin, row_end) (kernels.h, SpmmI8Fn); rows outside stay zero.
  py::array spmm_block4_i8(const py::handle& ptr_a, const py::handle& col_a, const py::handle& val_a,
                           const py::handle& w_scale_a, int32_t row_begin, int32_t row_end, const py::handle& xq_a,
                           const py::handle& x_scale_a, const py::handle& x_zero_a, const py::object& bias,
                           const py::object& residual) {
    auto ptr = checked_array<int32_t>(ptr_a, "ptr");
    check_shape(ptr, {-1}, "ptr");
    const int64_t rows = dim(ptr.shape(0) - 1, "rows");
    auto col = checked_array<uint16_t>(col_a, "col");
    check_shape(col, {-1}, "col");
    const int64_t nb = col.shape(0);
    auto val = checked_array<int8_t>(val_a, "val");
    check_shape(val, {nb, 4}, "val");
    auto w_scale = checked_array<float>(w_scale_a, "w_scale");
    check_shape(w_scale, {rows}, "w_scale");
    auto xq_arr = checked_array<uint8_t>(xq_a, "xq");
    check_shape(xq_arr, {-1, -1, 4}, "xq");
    const int64_t kb = xq_arr.shape(0), n = dim(xq_arr.shape(1), "tokens");
    auto x_scale = checked_array<float>(x_scale_a, "x_scale");
    auto x_zero = checked_array<int32_t>(x_zero_a, "x_zero");
    check_shape(x_scale, {n}, "x_scale");
    check_shape(x_zero, {n}, "x_zero");
    if (!(0 <= row_begin && row_begin <= row_end && row_end <= rows)) throw py::value_error("row range");
    // The contract's ranges, which keep every int32 sum exact: K <= kInt8MaxCols, zero points of u8 values.
    if (kb * 4 > kInt8MaxCols)
      throw py::value_error("xq holds " + std::to_string(kb) + " blocks; the int8 kernels take at most " +
                            std::to_string(kInt8MaxCols / 4));
    for (int64_t t = 0; t < n; ++t)
      if (x_zero.data()[t] < 0 || x_zero.data()[t] > 255) throw py::value_error("x_zero must be in [0, 255]");
    if (ptr.data()[0] != 0 || ptr.data()[rows] != nb) throw py::value_error("ptr must run from 0 to the blocks");
    std::vector<int32_t> words(static_cast<std::size_t>(nb)), sums(static_cast<std::size_t>(rows));
    for (int64_t r = 0; r < rows; ++r) {
      if (ptr.data()[r] > ptr.data()[r + 1]) throw py::value_error("ptr must be non-decreasing");
      for (int32_t j = ptr.data()[r]; j < ptr.data()[r + 1]; ++j) {
        if (col.data()[j] >= kb) throw py::value_error("col reads past the blocks of xq");
        const int8_t* b = val.data() + 4 * static_cast<int64_t>(j);
        if (t_.int8_bounded_pairs && !(bounded(b[0], b[1]) && bounded(b[2], b[3])))
          throw py::value_error("this table's int8 kernel takes only blocks with bounded byte pairs (kernels.h)");
        std::memcpy(&words[j], b, 4);
        sums[r] += b[0] + b[1] + b[2] + b[3];
      }
    }
    const int64_t ld = padded(n);
    AlignedBuffer<uint8_t> xq(static_cast<std::size_t>(kb * ld * 4));
    for (int64_t b = 0; b < kb; ++b) std::memcpy(xq.data() + b * ld * 4, xq_arr.data(b, 0, 0), n * 4);
    AlignedBuffer<float> xs(static_cast<std::size_t>(ld));
    AlignedBuffer<int32_t> xz(static_cast<std::size_t>(ld));
    std::memcpy(xs.data(), x_scale.data(), n * sizeof(float));
    std::memcpy(xz.data(), x_zero.data(), n * sizeof(int32_t));
    Rows y(rows, n);
    EpilogueArgs e(bias, residual, "none", rows, n);
    const Int8View view{ptr.data(), col.data(), words.data(), w_scale.data(), sums.data()};
    t_.spmm_block4_i8(view, row_begin, row_end, xq.data(), ld, xs.data(), xz.data(), y.data(), y.ld,
                      static_cast<int32_t>(n), e.ep);
    return y.to_numpy(rows);
  }

 private:
  static bool bounded(int8_t a, int8_t b) {
    const int pos = std::max<int>(a, 0) + std::max<int>(b, 0), neg = std::min<int>(a, 0) + std::min<int>(b, 0);
    return pos <= 128 && neg >= -128;
  }

  const KernelTable& t_;
};

}  // namespace

void register_kernel_table(py::module_& m) {
  std::vector<std::string> names;
#define SPARSEBERT_KERNEL_NAME(type, name) names.emplace_back(#name);
  SPARSEBERT_KERNELS(SPARSEBERT_KERNEL_NAME)
#undef SPARSEBERT_KERNEL_NAME
  m.attr("KERNELS") = names;
  py::object none = py::none();
  py::class_<Kernels>(m, "Kernels", "One ISA's kernel table, each entry callable on numpy arrays (for tests).")
      .def(py::init<const py::object&>(), py::arg("isa") = none)
      .def_property_readonly("isa", &Kernels::isa)
      .def_property_readonly("int8_isa", &Kernels::int8_isa)
      .def_property_readonly("int8_bounded_pairs", &Kernels::int8_bounded_pairs)
      .def("spmm", &Kernels::spmm, py::arg("name"), py::arg("ptr"), py::arg("rows"), py::arg("idx"), py::arg("val"),
           py::arg("pair_begin"), py::arg("pair_end"), py::arg("x"), py::arg("m"), py::arg("y") = none,
           py::arg("bias") = none, py::arg("residual") = none, py::arg("accumulate") = false)
      .def("finish_rows", &Kernels::finish_rows, py::arg("rows"), py::arg("y"), py::arg("bias") = none,
           py::arg("activation") = "none", py::arg("residual") = none)
      .def("gemm", &Kernels::gemm, py::arg("name"), py::arg("w"), py::arg("x"), py::arg("y") = none,
           py::arg("bias") = none, py::arg("activation") = "none", py::arg("residual") = none,
           py::arg("accumulate") = false)
      .def("layer_norm", &Kernels::layer_norm, py::arg("x"), py::arg("gamma"), py::arg("beta"), py::arg("eps"))
      .def("softmax_cols", &Kernels::softmax_cols, py::arg("s"), py::arg("scale"), py::arg("keep"))
      .def("fma_peak", &Kernels::fma_peak, py::arg("iterations"))
      .def("quantize", &Kernels::quantize, py::arg("x"))
      .def("spmm_block4_i8", &Kernels::spmm_block4_i8, py::arg("ptr"), py::arg("col"), py::arg("val"),
           py::arg("w_scale"), py::arg("row_begin"), py::arg("row_end"), py::arg("xq"), py::arg("x_scale"),
           py::arg("x_zero"), py::arg("bias") = none, py::arg("residual") = none);
}

}  // namespace sparsebert
