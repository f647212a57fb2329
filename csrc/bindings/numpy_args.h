// Strict numpy argument checks for the bindings: the dtype must match exactly (no silent casts of weights or
// ids), the shape is checked, and non-contiguous or misaligned arrays are copied to aligned C order.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace sparsebert {
namespace py = pybind11;

template <class T>
const char* dtype_name();
template <> inline const char* dtype_name<float>() { return "float32"; }
template <> inline const char* dtype_name<int32_t>() { return "int32"; }
template <> inline const char* dtype_name<uint16_t>() { return "uint16"; }
template <> inline const char* dtype_name<int8_t>() { return "int8"; }
template <> inline const char* dtype_name<uint8_t>() { return "uint8"; }

// A C-contiguous, aligned array of T from obj; TypeError if obj is not a numpy array of exactly dtype T.
template <class T>
py::array_t<T, py::array::c_style> checked_array(const py::handle& obj, const std::string& name) {
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(name + ": expected a numpy array, got " + std::string(py::str(py::type::of(obj))));
  py::array arr = py::reinterpret_borrow<py::array>(obj);
  if (!arr.dtype().is(py::dtype::of<T>()))
    throw py::type_error(name + ": expected dtype " + dtype_name<T>() + ", got " + std::string(py::str(arr.dtype())));
  auto out = py::array_t<T, py::array::c_style | py::array::forcecast>::ensure(arr);
  if (reinterpret_cast<std::uintptr_t>(out.data()) % alignof(T) == 0) return out;
  // A C-contiguous view at an odd byte offset (e.g. np.frombuffer(buf, offset=1)) passes ensure() as it is;
  // reading T through it is undefined behaviour, so copy it into fresh, aligned storage.
  py::array_t<T, py::array::c_style> aligned(std::vector<py::ssize_t>(out.shape(), out.shape() + out.ndim()));
  std::memcpy(aligned.mutable_data(), out.data(), static_cast<std::size_t>(out.nbytes()));
  return aligned;
}

// Shape check: -1 in `expected` matches any extent.
inline void check_shape(const py::array& arr, const std::vector<int64_t>& expected, const std::string& name) {
  bool ok = arr.ndim() == static_cast<py::ssize_t>(expected.size());
  for (std::size_t i = 0; ok && i < expected.size(); ++i) ok = expected[i] < 0 || arr.shape(i) == expected[i];
  if (ok) return;
  auto fmt = [](const std::vector<int64_t>& dims) {
    std::string s = "(";
    for (std::size_t i = 0; i < dims.size(); ++i)
      s += (i ? ", " : "") + (dims[i] < 0 ? std::string("*") : std::to_string(dims[i]));
    return s + (dims.size() == 1 ? ",)" : ")");
  };
  std::vector<int64_t> got(arr.shape(), arr.shape() + arr.ndim());
  throw py::value_error(name + ": expected shape " + fmt(expected) + ", got " + fmt(got));
}

}  // namespace sparsebert
