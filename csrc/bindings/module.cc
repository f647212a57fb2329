// sparsebert._core: the compiled half of sparsebert.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>

#include "bindings/bindings.h"
#include "common/tile_matrix.h"
#include "kernels/cpu_features.h"
#include "kernels/dispatch.h"

namespace sparsebert {

const KernelTable& table_for(const py::object& isa) {
  return kernels_for(isa.is_none() ? default_isa() : isa.cast<std::string>());
}

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
  m.def(
      "int8_isa", [](const py::object& isa) { return std::string(table_for(isa).int8_isa); },
      py::arg("isa") = py::none(),
      "The instructions the int8 kernel of an ISA path uses: avx512_vnni, avx2 (an AVX-512 CPU without VNNI "
      "too), neon_dotprod (the neon_dotprod path) or scalar (the neon path too).");
  m.attr("TILE_TOKENS") = kTileTokens;
  // True in the AddressSanitizer build (CMake SPARSEBERT_SANITIZE, .ci/sanitizers): tests that measure
  // memory skip there, since the sanitizer's shadow memory and quarantine are not the engine's.
#if defined(__SANITIZE_ADDRESS__)
  m.attr("SANITIZED") = true;
#else
  m.attr("SANITIZED") = false;
#endif
  m.def(
      "fma_peak_gflops",
      [](const py::object& isa, double seconds) {
        if (!(seconds > 0.0 && seconds <= 60.0)) throw py::value_error("seconds must be in (0, 60]");
        const KernelTable& k = table_for(isa);
        py::gil_scoped_release release;
        float sink[16];
        using clock = std::chrono::steady_clock;
        // Calibrate on a short run, then time one run of about `seconds`.
        int64_t iterations = 1 << 16;
        double elapsed = 0.0, flops = 0.0;
        for (;;) {
          const auto t0 = clock::now();
          flops = k.fma_peak(iterations, sink);
          elapsed = std::chrono::duration<double>(clock::now() - t0).count();
          if (elapsed >= seconds * 0.5 || iterations > (int64_t{1} << 40)) break;
          iterations *= elapsed > 1e-4 ? std::max<int64_t>(2, static_cast<int64_t>(seconds / elapsed)) : 16;
        }
        return flops / elapsed / 1e9;
      },
      py::arg("isa") = py::none(), py::arg("seconds") = 0.2,
      "Single-thread fp32 FMA peak of an ISA path in GFLOP/s, measured with a register-resident FMA loop.");
}

}  // namespace sparsebert

PYBIND11_MODULE(_core, m) {
  m.doc() = "sparsebert compiled core: sparse kernels and the BERT encoder";
  sparsebert::register_system(m);
  sparsebert::register_packed_linear(m);
  sparsebert::register_kernel_table(m);
  sparsebert::register_encoder(m);
  sparsebert::register_bf16(m);
}
