#include "kernels/cpu_features.h"

#include <cstdint>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define SPARSEBERT_X86 1
#elif defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#elif defined(__aarch64__) && defined(__APPLE__)
#include <sys/sysctl.h>
#endif

namespace sparsebert {
namespace {

#ifdef SPARSEBERT_X86
struct Regs { uint32_t a = 0, b = 0, c = 0, d = 0; };

Regs cpuid(uint32_t leaf, uint32_t subleaf = 0) {
  Regs r;
  __cpuid_count(leaf, subleaf, r.a, r.b, r.c, r.d);
  return r;
}

// XGETBV is encoded by hand so this file needs no -mxsave flag (it is compiled for the baseline ISA).
uint64_t xgetbv0() {
  uint32_t eax, edx;
  __asm__ volatile(".byte 0x0f, 0x01, 0xd0" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<uint64_t>(edx) << 32) | eax;
}

CpuFeatures detect() {
  CpuFeatures f;
  const uint32_t max_leaf = cpuid(0).a;
  Regs v = cpuid(0);
  char vendor[13] = {0};
  std::memcpy(vendor, &v.b, 4);
  std::memcpy(vendor + 4, &v.d, 4);
  std::memcpy(vendor + 8, &v.c, 4);
  f.vendor = vendor;

  if (cpuid(0x80000000u).a >= 0x80000004u) {
    char brand[49] = {0};
    for (uint32_t i = 0; i < 3; ++i) {
      Regs r = cpuid(0x80000002u + i);
      std::memcpy(brand + 16 * i, &r, 16);
    }
    f.brand = brand;
    const auto first = f.brand.find_first_not_of(' ');
    f.brand = first == std::string::npos ? std::string() : f.brand.substr(first);
  }

  if (max_leaf < 1) return f;
  const Regs l1 = cpuid(1);
  const bool osxsave = (l1.c >> 27) & 1;
  f.fma = (l1.c >> 12) & 1;
  f.f16c = (l1.c >> 29) & 1;
  const bool avx = (l1.c >> 28) & 1;
  if (osxsave && avx) {
    const uint64_t xcr0 = xgetbv0();
    f.os_ymm = (xcr0 & 0x6) == 0x6;       // SSE and AVX state
    f.os_zmm = (xcr0 & 0xE6) == 0xE6;     // plus opmask, ZMM_Hi256 and Hi16_ZMM state
    f.os_tiles = (xcr0 & 0x60000) == 0x60000;  // XTILECFG and XTILEDATA state
  }
  if (max_leaf >= 7) {
    const Regs l7 = cpuid(7, 0);
    f.avx2 = avx && ((l7.b >> 5) & 1);
    f.avx512f = (l7.b >> 16) & 1;
    f.avx512dq = (l7.b >> 17) & 1;
    f.avx512bw = (l7.b >> 30) & 1;
    f.avx512vl = (l7.b >> 31) & 1;
    f.avx512_vnni = (l7.c >> 11) & 1;
    f.amx_bf16 = (l7.d >> 22) & 1;
    f.amx_tile = (l7.d >> 24) & 1;
    if (cpuid(7, 0).a >= 1) {
      const Regs l71 = cpuid(7, 1);
      f.avx_vnni = (l71.a >> 4) & 1;
      f.avx512_bf16 = (l71.a >> 5) & 1;
    }
  }
  return f;
}
#elif defined(__aarch64__) && defined(__linux__)
// The bits of the kernel's ABI (arch/arm64/include/uapi/asm/hwcap.h), spelled out here because older C libraries'
// headers lack the newer ones.
constexpr unsigned long kHwcapAsimd = 1ul << 1;
constexpr unsigned long kHwcapAsimdDp = 1ul << 20;
constexpr unsigned long kHwcap2I8mm = 1ul << 13;

CpuFeatures detect() {
  CpuFeatures f;
  f.vendor = "ARM";
  const unsigned long hwcap = getauxval(AT_HWCAP), hwcap2 = getauxval(AT_HWCAP2);
  f.neon = (hwcap & kHwcapAsimd) != 0;
  f.asimddp = (hwcap & kHwcapAsimdDp) != 0;
  f.i8mm = (hwcap2 & kHwcap2I8mm) != 0;
  return f;
}
#elif defined(__aarch64__) && defined(__APPLE__)
bool sysctl_flag(const char* name) {
  int value = 0;
  size_t size = sizeof(value);
  return sysctlbyname(name, &value, &size, nullptr, 0) == 0 && value != 0;
}

CpuFeatures detect() {
  CpuFeatures f;
  f.vendor = "Apple";
  char brand[128] = {0};
  size_t size = sizeof(brand) - 1;
  if (sysctlbyname("machdep.cpu.brand_string", brand, &size, nullptr, 0) == 0) f.brand = brand;
  f.neon = true;  // every Apple arm64 CPU has Advanced SIMD
  f.asimddp = sysctl_flag("hw.optional.arm.FEAT_DotProd");
  f.i8mm = sysctl_flag("hw.optional.arm.FEAT_I8MM");
  return f;
}
#else
CpuFeatures detect() { return CpuFeatures{}; }
#endif

}  // namespace

std::vector<std::string> CpuFeatures::flags() const {
  std::vector<std::string> out;
  auto add = [&](bool on, const char* name) { if (on) out.emplace_back(name); };
  add(avx2, "avx2"); add(fma, "fma"); add(f16c, "f16c");
  add(avx512f, "avx512f"); add(avx512bw, "avx512bw"); add(avx512dq, "avx512dq"); add(avx512vl, "avx512vl");
  add(avx512_vnni, "avx512_vnni"); add(avx512_bf16, "avx512_bf16"); add(avx_vnni, "avx_vnni");
  add(amx_tile, "amx_tile"); add(amx_bf16, "amx_bf16");
  add(os_ymm, "os_ymm"); add(os_zmm, "os_zmm"); add(os_tiles, "os_tiles");
  add(neon, "neon"); add(asimddp, "asimddp"); add(i8mm, "i8mm");
  return out;
}

const CpuFeatures& cpu_features() {
  static const CpuFeatures features = detect();
  return features;
}

}  // namespace sparsebert
