// AVX2 + FMA FMA peak loop, instantiated from kernels/simd/peak.inl (the kernel benchmark's yardstick).
#include <immintrin.h>

#include "kernels/kernels.h"

namespace sparsebert {
namespace avx2 {
#include "kernels/kernel_decls.inl"
namespace {
#include "kernels/avx2/simd.inl"
#include "kernels/simd/peak.inl"
}  // namespace

double fma_peak(int64_t iterations, float* sink) { return fma_peak_impl<Simd>(iterations, sink); }

}  // namespace avx2
}  // namespace sparsebert
