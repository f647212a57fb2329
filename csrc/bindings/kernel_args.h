// Numpy matrices in and out of the buffers a kernel is called on: rows padded to whole 16-lane vectors (kernels.h:
// a kernel may touch round_up(n, 16) lanes), zero padding, and the epilogue's arrays kept alive with the call.
// Used by kernel_table_bindings.cc only.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "bindings/numpy_args.h"
#include "common/aligned_buffer.h"
#include "encoder/encoder_spec.h"
#include "kernels/kernels.h"

namespace sparsebert {
namespace kernel_args {

inline int64_t padded(int64_t n) { return std::max<int64_t>(16, (n + 15) / 16 * 16); }

// A [rows][n] float matrix held with a row stride padded to whole vectors (zero padding).
struct Rows {
  Rows(int64_t rows, int64_t n) : rows(rows), n(n), ld(padded(n)) {
    buf.reset(static_cast<std::size_t>(rows * ld + ld));
  }
  Rows(const py::handle& obj, const char* name, int64_t rows, int64_t n) : Rows(rows, n) {
    auto a = checked_array<float>(obj, name);
    check_shape(a, {rows, n}, name);
    for (int64_t r = 0; r < rows; ++r) std::memcpy(buf.data() + r * ld, a.data() + r * n, n * sizeof(float));
  }
  py::array_t<float> to_numpy(int64_t count) const {
    py::array_t<float> out({static_cast<py::ssize_t>(count), static_cast<py::ssize_t>(n)});
    for (int64_t r = 0; r < count; ++r) std::memcpy(out.mutable_data(r, 0), buf.data() + r * ld, n * sizeof(float));
    return out;
  }
  float* data() { return buf.data(); }
  int64_t rows, n, ld;
  AlignedBuffer<float> buf;
};

// The epilogue arguments: bias [m], residual [m, n], activation; kept alive with the call.
struct EpilogueArgs {
  EpilogueArgs(const py::object& bias, const py::object& residual, const std::string& activation, int64_t m,
               int64_t n) {
    if (!bias.is_none()) {
      b = checked_array<float>(bias, "bias");
      check_shape(b, {m}, "bias");
      ep.bias = b.data();
    }
    if (!residual.is_none()) {
      r.emplace_back(residual, "residual", m, n);
      ep.residual = r.back().data();
      ep.ldr = r.back().ld;
    }
    ep.act = parse_activation(activation);
  }
  py::array_t<float, py::array::c_style> b;
  std::vector<Rows> r;
  Epilogue ep;
};

// A kernel's output: y_init's values (kept where the kernel writes nothing), else zeros.
inline Rows output(const py::object& y_init, int64_t m, int64_t n) {
  return y_init.is_none() ? Rows(m, n) : Rows(y_init, "y", m, n);
}

}  // namespace kernel_args
}  // namespace sparsebert
