#include "kernels/dispatch.h"

#include <cstdlib>
#include <stdexcept>

#include "kernels/cpu_features.h"
#include "kernels/isa_tables.h"

namespace sparsebert {
namespace {

const char* const kKnownIsas = "avx512, avx2, scalar";

bool runnable(const std::string& isa) {
  const CpuFeatures& f = cpu_features();
  if (isa == "avx512") return f.can_run_avx512();
  if (isa == "avx2") return f.can_run_avx2();
  return isa == "scalar";
}

void check_runnable(const std::string& isa, const char* origin) {
  if (isa != "avx512" && isa != "avx2" && isa != "scalar")
    throw std::invalid_argument(std::string(origin) + "unknown ISA '" + isa + "' (known: " + kKnownIsas + ")");
  if (!runnable(isa)) {
    std::string have;
    for (const auto& a : available_isas()) have += (have.empty() ? "" : ", ") + a;
    throw std::invalid_argument(std::string(origin) + "this CPU cannot run ISA '" + isa + "' (available: " +
                                have + ")");
  }
}

}  // namespace

std::vector<std::string> available_isas() {
  std::vector<std::string> out;
  if (runnable("avx512")) out.emplace_back("avx512");
  if (runnable("avx2")) out.emplace_back("avx2");
  out.emplace_back("scalar");
  return out;
}

std::string default_isa() {
  const char* forced = std::getenv("SPARSEBERT_ISA");
  if (forced != nullptr && *forced != '\0') {
    check_runnable(forced, "SPARSEBERT_ISA: ");
    return forced;
  }
  return available_isas().front();
}

const KernelTable& kernels_for(const std::string& isa) {
  check_runnable(isa, "");
  // Each table is built on first use and only after the check above: table() lives in a file compiled with
  // that ISA's flags, so even building it may execute that ISA's instructions.
  if (isa == "avx512") {
    static const KernelTable t = avx512::table();
    return t;
  }
  if (isa == "avx2") {
    static const KernelTable t = avx2::table();
    return t;
  }
  static const KernelTable t = ref::table();
  return t;
}

}  // namespace sparsebert
