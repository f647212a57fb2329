// What the CPU and the OS support, read once: CPUID and XGETBV on x86-64; on aarch64 the kernel's hardware
// capabilities (getauxval) on Linux, sysctlbyname on macOS.
#pragma once

#include <string>
#include <vector>

namespace sparsebert {

struct CpuFeatures {
  std::string vendor;
  std::string brand;
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512dq = false, avx512vl = false;
  bool avx512_vnni = false, avx512_bf16 = false, avx_vnni = false;
  bool os_ymm = false;  // XCR0 has SSE + AVX state: the OS saves ymm registers
  bool os_zmm = false;  // XCR0 also has opmask + zmm state
  // AMX: tile registers and their bf16 dot product; os_tiles when XCR0 has tile state (Linux still makes each
  // process ask for it: kernels/bf16_dispatch.cc).
  bool amx_tile = false, amx_bf16 = false, os_tiles = false;
  // aarch64: Advanced SIMD (NEON, part of every ARMv8-A CPU), its int8 dot products (sdot/udot, ARMv8.2's
  // optional FEAT_DotProd) and int8 matrix multiply (usmmla/usdot, FEAT_I8MM).
  bool neon = false, asimddp = false, i8mm = false;

  bool can_run_avx2() const { return os_ymm && avx2 && fma; }
  bool can_run_avx512() const { return can_run_avx2() && os_zmm && avx512f && avx512bw && avx512dq && avx512vl; }
  bool can_run_neon() const { return neon; }
  std::vector<std::string> flags() const;
};

const CpuFeatures& cpu_features();

}  // namespace sparsebert
