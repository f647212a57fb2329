// The bf16 attention kernels (kernels/bf16.h) on numpy arrays, for their tests: each table's packers and product,
// with the shapes and strides checked against the contract here.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <string>
#include <vector>

#include "bindings/bindings.h"
#include "bindings/numpy_args.h"
#include "kernels/bf16.h"
#include "kernels/dispatch.h"

namespace sparsebert {
namespace {

const Bf16Kernels& bf16_table(const std::string& name) {
  if (name == "reference") return bf16_reference_kernels();
  if (name != "fast") throw py::value_error("table must be 'fast' or 'reference', got '" + name + "'");
  const char* why_not = nullptr;
  const Bf16Kernels* fast = bf16_fast_kernels(&why_not);
  if (!fast) throw py::value_error(std::string("bf16 kernels not available: ") + why_not);
  return *fast;
}

py::object bf16_unavailable(const py::object& isa) {
  std::string why_not;
  const std::string name = isa.is_none() ? default_isa() : isa.cast<std::string>();
  kernels_for(name);  // an unknown ISA, or one this CPU cannot run, is its own error
  if (bf16_kernels_for_isa(name, &why_not)) return py::none();
  return py::str(why_not);
}

// Packs src (rows x cols, float32) into a uint16 array of `dst_rows` x `ldd` filled with `fill` first, so that a
// test sees which cells the packer wrote.
py::array bf16_pack(const std::string& kind, const py::handle& src_a, int64_t dst_rows, int64_t ldd, int fill,
                    const std::string& table) {
  const Bf16Kernels& t = bf16_table(table);
  if (fill < 0 || fill > 0xFFFF) throw py::value_error("fill must be in [0, 65535]");
  auto src = checked_array<float>(src_a, "src");
  check_shape(src, {-1, -1}, "src");
  const int64_t rows = src.shape(0), cols = src.shape(1);
  if (rows < 1 || cols < 1 || rows > 4096 || cols > 4096) throw py::value_error("src must be 1..4096 x 1..4096");
  Bf16PackFn fn = nullptr;
  int64_t need_rows = 0, need_ld = 0;
  if (kind == "rows") fn = t.pack_rows, need_rows = rows, need_ld = cols;
  else if (kind == "transposed") fn = t.pack_transposed, need_rows = cols, need_ld = rows;
  else if (kind == "pairs") fn = t.pack_pairs, need_rows = (rows + 1) / 2, need_ld = 2 * cols;
  else throw py::value_error("kind must be 'rows', 'transposed' or 'pairs', got '" + kind + "'");
  if (dst_rows < need_rows || ldd < need_ld || dst_rows * ldd > (int64_t{1} << 26))
    throw py::value_error("dst too small for the block, or too large");
  py::array_t<uint16_t> dst({dst_rows, ldd});
  std::fill(dst.mutable_data(), dst.mutable_data() + dst.size(), static_cast<uint16_t>(fill));
  fn(static_cast<int32_t>(rows), static_cast<int32_t>(cols), src.data(), cols, dst.mutable_data(), ldd);
  return dst;
}

// C = A B with A (m x lda, bf16 rows) and B (k / 2 x ldb, pairs); m, n multiples of 16, k of 32.
py::array bf16_gemm(const py::handle& a_a, const py::handle& b_a, int64_t m, int64_t n, int64_t k,
                    const std::string& table) {
  const Bf16Kernels& t = bf16_table(table);
  auto a = checked_array<uint16_t>(a_a, "a");
  auto b = checked_array<uint16_t>(b_a, "b");
  check_shape(a, {-1, -1}, "a");
  check_shape(b, {-1, -1}, "b");
  if (m < 16 || n < 16 || k < 32 || m % 16 || n % 16 || k % 32 || m > 4096 || n > 4096 || k > 4096)
    throw py::value_error("m and n must be multiples of 16, k of 32 (at most 4096)");
  if (a.shape(0) < m || a.shape(1) < k) throw py::value_error("a must hold m rows of k values");
  if (b.shape(0) < k / 2 || b.shape(1) < 2 * n) throw py::value_error("b must hold k / 2 pair rows of 2 n values");
  py::array_t<float> c({m, n});
  t.gemm(static_cast<int32_t>(m), static_cast<int32_t>(n), static_cast<int32_t>(k), a.data(), a.shape(1), b.data(),
         b.shape(1), c.mutable_data(), n);
  return c;
}

// The softmax of a scores block s (m x n float32, copied) over the rows keep marks, as bf16 pairs
// [(m + 1) / 2][2 * round_up(n, 16)].
py::array bf16_softmax_pairs(const py::handle& s_a, float scale, const py::handle& keep_a, const std::string& table) {
  const Bf16Kernels& t = bf16_table(table);
  auto s = checked_array<float>(s_a, "s");
  auto keep = checked_array<uint8_t>(keep_a, "keep");
  check_shape(s, {-1, -1}, "s");
  const int64_t m = s.shape(0), n = s.shape(1), ld = (n + 15) / 16 * 16;
  if (m < 1 || n < 1 || m > 4096 || n > 4096) throw py::value_error("s must be 1..4096 x 1..4096");
  check_shape(keep, {m}, "keep");
  if (!std::any_of(keep.data(), keep.data() + m, [](uint8_t k) { return k != 0; }))
    throw py::value_error("keep must keep at least one row");
  std::vector<float> padded(static_cast<std::size_t>(m * ld), 0.0f);  // the kernel may touch whole vectors
  for (int64_t r = 0; r < m; ++r) std::copy(s.data() + r * n, s.data() + (r + 1) * n, padded.data() + r * ld);
  py::array_t<uint16_t> dst({(m + 1) / 2, 2 * ld});
  std::fill(dst.mutable_data(), dst.mutable_data() + dst.size(), uint16_t{0xFFFF});
  t.softmax_pairs(static_cast<int32_t>(m), static_cast<int32_t>(n), padded.data(), ld, scale, keep.data(),
                  dst.mutable_data(), 2 * ld);
  return dst;
}

}  // namespace

void register_bf16(py::module_& m) {
  m.def("bf16_attention_unavailable", &bf16_unavailable, py::arg("isa") = py::none(),
        "None when bf16 attention can run here on ISA path `isa` (None: the default), else why not.");
  m.def("bf16_pack", &bf16_pack, py::arg("kind"), py::arg("src"), py::arg("dst_rows"), py::arg("ldd"),
        py::arg("fill") = 0xFFFF, py::arg("table") = "fast");
  m.def("bf16_gemm", &bf16_gemm, py::arg("a"), py::arg("b"), py::arg("m"), py::arg("n"), py::arg("k"),
        py::arg("table") = "fast");
  m.def("bf16_softmax_pairs", &bf16_softmax_pairs, py::arg("s"), py::arg("scale"), py::arg("keep"),
        py::arg("table") = "fast");
}

}  // namespace sparsebert
