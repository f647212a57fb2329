// Scalar LayerNorm and column softmax.
#include <cmath>

#include "kernels/ref/kernels_ref.h"

namespace sparsebert {
namespace ref {

void layer_norm(int32_t features, int32_t n, const float* x, int64_t ldx, float* y, int64_t ldy,
                const float* gamma, const float* beta, float eps) {
  const float inv_f = 1.0f / static_cast<float>(features);
  for (int32_t t = 0; t < n; ++t) {
    float sum = 0.0f;
    for (int32_t f = 0; f < features; ++f) sum += x[f * ldx + t];
    const float mean = sum * inv_f;
    // Two passes (mean, then centred squares) rather than E[x^2] - E[x]^2, which cancels badly.
    float sq = 0.0f;
    for (int32_t f = 0; f < features; ++f) {
      const float d = x[f * ldx + t] - mean;
      sq += d * d;
    }
    const float rstd = 1.0f / std::sqrt(sq * inv_f + eps);
    for (int32_t f = 0; f < features; ++f)
      y[f * ldy + t] = (x[f * ldx + t] - mean) * rstd * gamma[f] + beta[f];
  }
}

void softmax_cols(int32_t m, int32_t n, float* s, int64_t lds, float scale, const uint8_t* keep) {
  for (int32_t t = 0; t < n; ++t) {
    float mx = -INFINITY;
    for (int32_t j = 0; j < m; ++j)
      if (keep[j]) mx = std::fmax(mx, s[j * lds + t] * scale);
    float sum = 0.0f;
    for (int32_t j = 0; j < m; ++j) {
      float& v = s[j * lds + t];
      v = keep[j] ? std::exp(v * scale - mx) : 0.0f;
      sum += v;
    }
    const float inv = 1.0f / sum;
    for (int32_t j = 0; j < m; ++j) s[j * lds + t] *= inv;
  }
}

}  // namespace ref
}  // namespace sparsebert
