// Scalar FMA peak loop: what the scalar path can reach, for the kernel benchmark's "fraction of peak".
#include <cmath>

#include "kernels/ref/kernels_ref.h"

namespace sparsebert {
namespace ref {

double fma_peak(int64_t iterations, float* sink) {
  constexpr int kAcc = 12;
  float acc[kAcc];
  for (int i = 0; i < kAcc; ++i) acc[i] = 0.001f * static_cast<float>(i);
  for (int64_t it = 0; it < iterations; ++it)
    for (int i = 0; i < kAcc; ++i) acc[i] = acc[i] * 0.999f + 0.0001f;
  float total = 0.0f;
  for (int i = 0; i < kAcc; ++i) total += acc[i];
  *sink = total;
  return 2.0 * kAcc * static_cast<double>(iterations);
}

}  // namespace ref
}  // namespace sparsebert
