// Registration functions of the _core module, one per exposed area.
#pragma once

#include <pybind11/pybind11.h>

#include <string>

#include "kernels/kernels.h"

namespace sparsebert {
namespace py = pybind11;

void register_system(py::module_& m);
void register_packed_linear(py::module_& m);
void register_encoder(py::module_& m);

// "gelu" -> Activation::kGelu, ...; ValueError for an unknown name.
Activation parse_activation(const std::string& name);

}  // namespace sparsebert
