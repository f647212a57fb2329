// What the CPU and the OS support, read once with CPUID and XGETBV.
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

  bool can_run_avx2() const { return os_ymm && avx2 && fma; }
  bool can_run_avx512() const { return can_run_avx2() && os_zmm && avx512f && avx512bw && avx512dq && avx512vl; }
  std::vector<std::string> flags() const;
};

const CpuFeatures& cpu_features();

}  // namespace sparsebert
