// Scalar int8 kernels: activation quantization and the int8 4-block product (see kernels.h). The oracle for the
// SIMD versions, which must match it bit for bit: the same float32 steps in the same order, fma written out.
#include <cmath>
#include <cstring>

#include "kernels/ref/kernels_ref.h"

namespace sparsebert {
namespace ref {
namespace {

// nearbyint, then clamp to [0, 255]; NaN gives 0 (as the SIMD max(v, 0) does).
int32_t to_u8(float v) {
  v = std::nearbyint(v);
  v = v >= 0.0f ? v : 0.0f;
  v = v <= 255.0f ? v : 255.0f;
  return static_cast<int32_t>(v);
}

}  // namespace

void quantize(int32_t k, int32_t n, const float* x, int64_t ldx, uint8_t* xq, int64_t ldq, float* scale,
              int32_t* zero) {
  const int32_t blocks = (k + 3) / 4;
  for (int32_t t = 0; t < n; ++t) {
    float lo = 0.0f, hi = 0.0f;
    for (int32_t f = 0; f < k; ++f) {
      const float v = x[f * ldx + t];
      lo = v < lo ? v : lo;
      hi = v > hi ? v : hi;
    }
    float s = (hi - lo) / 255.0f;
    if (!(s > 0.0f) || !std::isfinite(s)) s = 1.0f;  // all zeros (or non-finite input): any scale will do
    const float inv = 1.0f / s;
    const int32_t z = to_u8(-lo * inv);
    scale[t] = s;
    zero[t] = z;
    for (int32_t b = 0; b < blocks; ++b) {
      uint8_t* q = xq + (b * ldq + t) * 4;
      for (int32_t l = 0; l < 4; ++l) {
        const int32_t f = 4 * b + l;
        q[l] = static_cast<uint8_t>(f < k ? to_u8(std::nearbyint(x[f * ldx + t] * inv) + static_cast<float>(z)) : z);
      }
    }
  }
}

void spmm_block4_i8(const Int8View& w, int32_t row_begin, int32_t row_end, const uint8_t* xq, int64_t ldq,
                    const float* x_scale, const int32_t* x_zero, float* y, int64_t ldy, int32_t n,
                    const Epilogue& ep) {
  for (int32_t r = row_begin; r < row_end; ++r) {
    const float bias = ep.bias ? ep.bias[r] : 0.0f;
    for (int32_t t = 0; t < n; ++t) {
      int32_t acc = 0;
      for (int32_t j = w.ptr[r]; j < w.ptr[r + 1]; ++j) {
        int8_t wq[4];
        std::memcpy(wq, &w.val[j], 4);
        const uint8_t* q = xq + (static_cast<int64_t>(w.col[j]) * ldq + t) * 4;
        for (int l = 0; l < 4; ++l) acc += static_cast<int32_t>(wq[l]) * static_cast<int32_t>(q[l]);
      }
      const int32_t centred = acc - x_zero[t] * w.w_sum[r];
      float v = std::fma(static_cast<float>(centred), x_scale[t] * w.w_scale[r], bias);
      if (ep.residual) v += ep.residual[r * ep.ldr + t];
      y[r * ldy + t] = v;
    }
  }
}

}  // namespace ref
}  // namespace sparsebert
