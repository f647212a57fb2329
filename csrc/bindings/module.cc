// sparsebert._core: the compiled half of sparsebert.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bindings/bindings.h"
#include "common/tile_matrix.h"
#include "kernels/cpu_features.h"
#include "kernels/dispatch.h"

namespace sparsebert {

void register_system(py::module_& m) {
  m.def("available_isas", &available_isas, "ISAs this CPU and OS can run, best first.");
  m.def("default_isa", &default_isa,
        "SPARSEBERT_ISA when set (ValueError if unknown or unsupported here), else the best available ISA.");
  m.def("cpu_info", [] {
    const CpuFeatures& f = cpu_features();
    py::dict d;
    d["vendor"] = f.vendor;
    d["brand"] = f.brand;
    d["flags"] = f.flags();
    return d;
  });
  m.attr("TILE_TOKENS") = kTileTokens;
}

}  // namespace sparsebert

PYBIND11_MODULE(_core, m) {
  m.doc() = "sparsebert compiled core: sparse kernels and the BERT encoder";
  sparsebert::register_system(m);
  sparsebert::register_packed_linear(m);
  sparsebert::register_encoder(m);
}
