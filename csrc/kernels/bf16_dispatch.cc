// Choosing the bf16 kernels (kernels/bf16.h): the AMX table when the CPU, the OS and this process allow it.
#include "kernels/bf16.h"
#include "kernels/cpu_features.h"

#if defined(__linux__) && defined(__x86_64__)
#include <errno.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace sparsebert {
namespace {

#if defined(__x86_64__)
// Linux enables AMX tile data per process, on request (arch_prctl ARCH_REQ_XCOMP_PERM, since 5.16); a tile
// instruction without the grant kills the process with SIGILL.
// Null when granted, else why not.
const char* tile_grant_refused() {
#if defined(__linux__)
  constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0) return nullptr;
  // ENOSPC: some thread's alternate signal stack (sigaltstack) cannot hold the 8 KiB of tile state.
  if (errno == ENOSPC)
    return "the operating system refused this process AMX tile state: a thread's signal stack (sigaltstack) is "
           "too small for it";
  return "the operating system refused this process AMX tile state (Linux 5.16 or newer grants it)";
#else
  return "AMX tile state is requested on Linux only";
#endif
}

const char* amx_missing() {
  const CpuFeatures& f = cpu_features();
  if (!f.can_run_avx512() || !f.avx512_bf16) return "the CPU lacks AVX512-BF16";
  if (!f.amx_tile || !f.amx_bf16) return "the CPU lacks AMX-BF16 (Intel Xeon since Sapphire Rapids has it)";
  if (!f.os_tiles) return "the operating system does not enable AMX tile state";
  return tile_grant_refused();
}
#else
const char* amx_missing() { return "AMX exists on x86-64 only"; }
#endif

}  // namespace

const Bf16Kernels* bf16_fast_kernels(const char** why_not) {
  static const char* const missing = amx_missing();  // asked once: the grant holds for the whole process
#if defined(__x86_64__)
  static const Bf16Kernels table{"amx_bf16", avx512_bf16::pack_rows, avx512_bf16::pack_transposed,
                                 avx512_bf16::pack_pairs, amx::gemm, avx512_bf16::softmax_pairs};
  if (!missing) return &table;
#endif
  if (why_not) *why_not = missing;
  return nullptr;
}

const Bf16Kernels* bf16_kernels_for_isa(const std::string& isa, std::string* why_not) {
  const char* missing = nullptr;
  const Bf16Kernels* fast = bf16_fast_kernels(&missing);
  std::string reason = fast ? std::string() : std::string(missing);
  if (fast && isa != "avx512") reason = "it runs on the avx512 ISA path, not on " + isa;
  if (reason.empty()) return fast;
  if (why_not) *why_not = "bf16 attention is not available here: " + reason;
  return nullptr;
}

}  // namespace sparsebert
