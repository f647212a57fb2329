// The kernel oracle: every fp32 entry of every ISA table this CPU runs, against the scalar table, at the edge cases
// (token counts around the vector and tile widths, K not a multiple of 4, rows without nonzeros, a pair holding
// one row, every activation, accumulate on and off, bias and residual); the int8 entries bitwise. A C++ program so
// that it runs where Python does not: tools/test_aarch64.sh cross-builds it and runs it under qemu-aarch64 (the
// NEON kernels); natively it cross-checks the x86 ones. Exits 1 with the first mismatches on stderr.
//
// SPARSEBERT_ISA set: only that ISA is tested, and default_isa() must name it (the variable works as in Python).
#include <cstdio>
#include <cstdlib>
#include <stdexcept>

#include "kernels/cpu_features.h"
#include "kernels/dispatch.h"
#include "kernels/isa.h"
#include "oracle_check.h"

int main() {
  using namespace sparsebert;
  using namespace oracle;
  const char* forced = std::getenv("SPARSEBERT_ISA");
  std::vector<std::string> isas;
  try {
    if (forced && *forced) {
      if (default_isa() != forced) {
        std::fprintf(stderr, "kernel_oracle: SPARSEBERT_ISA=%s but default_isa() is %s\n", forced,
                     default_isa().c_str());
        return 1;
      }
      isas = {forced};
    } else {
      isas = available_isas();
    }
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "kernel_oracle: %s\n", e.what());
    return 1;
  }
  std::string flags;
  for (const std::string& f : cpu_features().flags()) flags += " " + f;
  std::printf("kernel_oracle: CPU features:%s\n", flags.empty() ? " (none detected)" : flags.c_str());
  const KernelTable ref = ref::table();
  Report rep;
  for (const std::string& isa : isas) {
    const KernelTable& kt = kernels_for(isa);
    const long before = rep.checks, failed = rep.failures;
    oracle::Rng rng(17);
    check_spmm(rep, kt, ref, 1, rng);
    check_spmm(rep, kt, ref, 4, rng);
    check_finish_rows(rep, kt, ref, rng);
    check_gemm(rep, kt, ref, false, rng);
    check_gemm(rep, kt, ref, true, rng);
    check_layer_norm(rep, kt, ref, rng);
    check_softmax(rep, kt, ref, rng);
    check_int8(rep, kt, ref, rng);
    check_quantize_specials(rep, kt, ref);
    check_fma_peak(rep, kt);
    // The entries this path does not inherit from the scalar table, so a script can check a kernel is wired in.
    std::string own;
#define SPARSEBERT_ORACLE_OWN(type, name) if (kt.name != ref.name) own += " " #name;
    SPARSEBERT_KERNELS(SPARSEBERT_ORACLE_OWN)
#undef SPARSEBERT_ORACLE_OWN
    std::printf("kernel_oracle: %s (int8: %s): %ld checks, %ld mismatches; own entries:%s\n", isa.c_str(),
                kt.int8_isa, rep.checks - before, rep.failures - failed, own.empty() ? " none" : own.c_str());
  }
  if (rep.failures) {
    std::fprintf(stderr, "kernel_oracle: FAILED, %ld mismatches\n", rep.failures);
    return 1;
  }
  std::printf("kernel_oracle: all %ld checks passed on %zu ISA(s)\n", rep.checks, isas.size());
  return 0;
}
