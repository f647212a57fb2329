// NEON activation quantization for the int8 kernels (kernels.h, QuantizeFn): 16 tokens per step (4 vectors, so
// the min/max pass has 8 independent chains), the float32 steps of the scalar reference in the same order, so the
// bytes are identical. Compiled with the neon level's baseline flags: every aarch64 CPU runs it.
#include <arm_neon.h>

#include "kernels/isa.h"

namespace sparsebert {
namespace {

constexpr int kVecs = 4;  // 4-token vectors per step

// The reference's `v < lo ? v : lo` and `v > hi ? v : hi` as compare and select: vminq/vmaxq would return the NaN
// of a NaN v, which the reference skips.
inline float32x4_t less_of(float32x4_t v, float32x4_t lo) { return vbslq_f32(vcltq_f32(v, lo), v, lo); }
inline float32x4_t greater_of(float32x4_t v, float32x4_t hi) { return vbslq_f32(vcgtq_f32(v, hi), v, hi); }

// The reference's to_u8: nearbyint (vrndn: to nearest, ties to even), then v >= 0 ? v : 0 (a NaN gives 0) and
// v <= 255 ? v : 255.
inline uint32x4_t to_u8(float32x4_t v) {
  const float32x4_t zero = vdupq_n_f32(0.0f), top = vdupq_n_f32(255.0f);
  v = vrndnq_f32(v);
  v = vbslq_f32(vcgeq_f32(v, zero), v, zero);
  v = vbslq_f32(vcleq_f32(v, top), v, top);
  return vcvtq_u32_f32(v);
}

void quantize(int32_t k, int32_t n, const float* x, int64_t ldx, uint8_t* xq, int64_t ldq, float* scale,
              int32_t* zero) {
  const int32_t blocks = (k + 3) / 4;
  const float32x4_t zero_f = vdupq_n_f32(0.0f), one = vdupq_n_f32(1.0f), top = vdupq_n_f32(255.0f);
  const float32x4_t inf = vdupq_n_f32(__builtin_inff());
  for (int32_t t0 = 0; t0 < n; t0 += 4 * kVecs) {
    float32x4_t lo[kVecs], hi[kVecs], inv[kVecs], zf[kVecs];
    uint32x4_t zi[kVecs];
    for (int v = 0; v < kVecs; ++v) lo[v] = hi[v] = zero_f;
    for (int32_t f = 0; f < k; ++f) {
      for (int v = 0; v < kVecs; ++v) {
        const float32x4_t xv = vld1q_f32(x + f * ldx + t0 + 4 * v);
        lo[v] = less_of(xv, lo[v]);
        hi[v] = greater_of(xv, hi[v]);
      }
    }
    for (int v = 0; v < kVecs; ++v) {
      float32x4_t s = vdivq_f32(vsubq_f32(hi[v], lo[v]), top);
      s = vbslq_f32(vandq_u32(vcgtq_f32(s, zero_f), vcltq_f32(s, inf)), s, one);  // else 1: any scale will do
      inv[v] = vdivq_f32(one, s);
      zi[v] = to_u8(vmulq_f32(vnegq_f32(lo[v]), inv[v]));
      zf[v] = vcvtq_f32_u32(zi[v]);  // as the reference's float(z): +0.0 even where -lo * inv rounded to -0.0
      vst1q_f32(scale + t0 + 4 * v, s);
      vst1q_s32(zero + t0 + 4 * v, vreinterpretq_s32_u32(zi[v]));
    }
    for (int32_t b = 0; b < blocks; ++b) {
      for (int v = 0; v < kVecs; ++v) {
        uint32x4_t q[4];
        for (int l = 0; l < 4; ++l) {
          const int32_t f = 4 * b + l;
          q[l] = f < k ? to_u8(vaddq_f32(vrndnq_f32(vmulq_f32(vld1q_f32(x + f * ldx + t0 + 4 * v), inv[v])), zf[v]))
                       : zi[v];  // padding features hold the zero point
        }
        // One 32-bit word per token, feature 4b + l in byte l: shift-left-and-insert keeps the bytes below.
        const uint32x4_t word = vsliq_n_u32(vsliq_n_u32(vsliq_n_u32(q[0], q[1], 8), q[2], 16), q[3], 24);
        vst1q_u8(xq + (b * ldq + t0 + 4 * v) * 4, vreinterpretq_u8_u32(word));
      }
    }
  }
}

}  // namespace

// The neon level's int8 entries: the quantizer. The int8 product stays scalar here; neon_dotprod sets its own.
template <>
void add_int8_kernels<Isa::kNeon>(KernelTable& table) {
  table.quantize = quantize;
}

}  // namespace sparsebert
