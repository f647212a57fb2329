// Registration functions of the _core module, one per exposed area. Bindings only convert between Python/numpy
// and C++; the rules they apply belong to the layers below.
#pragma once

#include <pybind11/pybind11.h>

#include <string>

#include "kernels/kernels.h"

namespace sparsebert {
namespace py = pybind11;

void register_system(py::module_& m);
void register_packed_linear(py::module_& m);
void register_kernel_table(py::module_& m);
void register_encoder(py::module_& m);
void register_bf16(py::module_& m);

// The kernel table of an `isa` argument (None: the default ISA).
const KernelTable& table_for(const py::object& isa);

}  // namespace sparsebert
