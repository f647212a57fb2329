// Advanced SIMD (NEON) primitives for the kernels written once in kernels/simd/: 4 fp32 lanes in 128-bit
// registers, 32 of them. Included only by files compiled with this ISA's flags (kernels/simd/instantiate.cc).
#pragma once

#include <arm_neon.h>

namespace sparsebert {
namespace neon {

struct Simd {
  using V = float32x4_t;
  static constexpr int kLanes = 4;
  static constexpr int kSpmmVecs = 8;   // sparse tile: 2 rows x 8 vectors = 16 accumulators, 32 tokens
  static constexpr int kGemmRows = 6;   // dense tile: 6 rows x 4 vectors = 24 accumulators + 4 loads + 1 weight
  static constexpr int kGemmVecs = 4;
  static constexpr int kNormVecs = 4;

  static V zero() { return vdupq_n_f32(0.0f); }
  static V set1(float v) { return vdupq_n_f32(v); }
  static V load(const float* p) { return vld1q_f32(p); }
  static void store(float* p, V v) { vst1q_f32(p, v); }
  static V add(V a, V b) { return vaddq_f32(a, b); }
  static V sub(V a, V b) { return vsubq_f32(a, b); }
  static V mul(V a, V b) { return vmulq_f32(a, b); }
  static V div(V a, V b) { return vdivq_f32(a, b); }
  static V fmadd(V a, V b, V c) { return vfmaq_f32(c, a, b); }
  static V fnmadd(V a, V b, V c) { return vfmsq_f32(c, a, b); }
  static V max(V a, V b) { return vmaxq_f32(a, b); }
  static V min(V a, V b) { return vminq_f32(a, b); }
  static V sqrt(V a) { return vsqrtq_f32(a); }
  static V abs(V a) { return vabsq_f32(a); }
  static V copysign(V mag, V sign) { return vbslq_f32(vdupq_n_u32(0x80000000u), sign, mag); }
  static V round(V a) { return vrndnq_f32(a); }  // to nearest, ties to even, as x86's _MM_FROUND_TO_NEAREST_INT
  // p * 2^n for integral n in [-126, 127]: build 2^n in the exponent field.
  static V ldexp(V p, V n) {
    const int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtnq_s32_f32(n), vdupq_n_s32(127)), 23);
    return vmulq_f32(p, vreinterpretq_f32_s32(e));
  }
  static V select_lt(V a, V b, V t, V f) { return vbslq_f32(vcltq_f32(a, b), t, f); }
};

}  // namespace neon
}  // namespace sparsebert
