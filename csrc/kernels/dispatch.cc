#include "kernels/dispatch.h"

#include <cstdlib>
#include <map>
#include <mutex>
#include <stdexcept>

#include "kernels/cpu_features.h"
#include "kernels/isa.h"

namespace sparsebert {
namespace {

// One step up from the scalar table: `isa` is the ISA path it belongs to, `present` whether this CPU and OS can
// run it, `apply` what it sets. A path's table is the scalar one with every step of that path and the paths
// listed before it applied in order, skipping steps the CPU lacks. An ISA is one folder (kernels/<isa>/), one
// sparsebert_add_isa call in CMakeLists.txt and one row here.
struct Level {
  const char* isa;
  bool (*present)(const CpuFeatures&);
  void (*apply)(KernelTable&);
};

#if defined(__x86_64__)
const Level kLevels[] = {
    {"avx2", [](const CpuFeatures& f) { return f.can_run_avx2(); },
     [](KernelTable& t) {
       t.isa = "avx2";
       add_simd_kernels<Isa::kAvx2>(t);
       add_int8_kernels<Isa::kAvx2>(t);
     }},
    {"avx512", [](const CpuFeatures& f) { return f.can_run_avx512(); },
     [](KernelTable& t) {
       t.isa = "avx512";
       add_simd_kernels<Isa::kAvx512>(t);
       add_int8_kernels<Isa::kAvx512>(t);
     }},
    // Not every AVX-512 CPU has VNNI (Skylake-SP lacks it): an extension within the avx512 path.
    {"avx512", [](const CpuFeatures& f) { return f.can_run_avx512() && f.avx512_vnni; },
     [](KernelTable& t) { add_int8_kernels<Isa::kAvx512Vnni>(t); }},
};
#define SPARSEBERT_HAS_LEVELS 1
#elif defined(__aarch64__)
const Level kLevels[] = {
    // Advanced SIMD is part of ARMv8-A, so every aarch64 CPU runs this path; the check keeps the table honest.
    {"neon", [](const CpuFeatures& f) { return f.can_run_neon(); },
     [](KernelTable& t) {
       t.isa = "neon";
       add_simd_kernels<Isa::kNeon>(t);
       add_int8_kernels<Isa::kNeon>(t);
     }},
    // The int8 dot product is optional before ARMv8.4 (Cortex-A57/A72 lack it): a path of its own above neon (as
    // avx512 is above avx2), so SPARSEBERT_ISA=neon_dotprod names it and SPARSEBERT_ISA=neon runs the plain NEON
    // path, the one such CPUs get, on any aarch64 CPU. Its fp32 kernels are neon's.
    {"neon_dotprod", [](const CpuFeatures& f) { return f.can_run_neon() && f.asimddp; },
     [](KernelTable& t) {
       t.isa = "neon_dotprod";
       add_int8_kernels<Isa::kNeonDotprod>(t);
     }},
};
#define SPARSEBERT_HAS_LEVELS 1
#endif  // other architectures have no SIMD path yet: scalar only

template <class F>
void for_each_level(F&& f) {
#ifdef SPARSEBERT_HAS_LEVELS
  for (const Level& level : kLevels) f(level);
#else
  (void)f;
#endif
}

bool runnable(const std::string& isa) {
  if (isa == "scalar") return true;
  bool found = false;
  for_each_level([&](const Level& level) {
    if (!found && isa == level.isa) found = level.present(cpu_features());
  });
  return found;
}

bool known(const std::string& isa) {
  bool found = isa == "scalar";
  for_each_level([&](const Level& level) { found = found || isa == level.isa; });
  return found;
}

std::string known_list() {
  std::string out;
  std::vector<std::string> names;
  for_each_level([&](const Level& level) {
    if (names.empty() || names.back() != level.isa) names.emplace_back(level.isa);
  });
  for (auto it = names.rbegin(); it != names.rend(); ++it) out += *it + ", ";
  return out + "scalar";
}

void check_runnable(const std::string& isa, const char* origin) {
  if (!known(isa))
    throw std::invalid_argument(std::string(origin) + "unknown ISA '" + isa + "' (known: " + known_list() + ")");
  if (!runnable(isa)) {
    std::string have;
    for (const auto& a : available_isas()) have += (have.empty() ? "" : ", ") + a;
    throw std::invalid_argument(std::string(origin) + "this CPU cannot run ISA '" + isa + "' (available: " +
                                have + ")");
  }
}

KernelTable build_table(const std::string& isa) {
  KernelTable table = ref::table();
  if (isa == "scalar") return table;
  bool past = false;  // whether the steps of `isa` itself have been reached and passed
  for_each_level([&](const Level& level) {
    const bool own = isa == level.isa;
    if (past && !own) return;
    past = past || own;
    if (level.present(cpu_features())) level.apply(table);
  });
  return table;
}

}  // namespace

std::vector<std::string> available_isas() {
  std::vector<std::string> out;
  for_each_level([&](const Level& level) {
    const bool listed = !out.empty() && out.front() == level.isa;
    if (!listed && level.present(cpu_features())) out.insert(out.begin(), level.isa);
  });
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
  // Built on first use and only after the check above: an ISA's code may execute only on a CPU that has it.
  // Never destroyed: engines' worker threads may still be computing with a table while the process exits (a
  // daemon thread inside run() at interpreter exit), so the tables must outlive static destruction.
  static std::mutex* mu = new std::mutex;
  static auto* tables = new std::map<std::string, KernelTable>;
  std::lock_guard<std::mutex> lock(*mu);
  auto it = tables->find(isa);
  if (it == tables->end()) it = tables->emplace(isa, build_table(isa)).first;
  return it->second;  // std::map never moves its elements
}

}  // namespace sparsebert
