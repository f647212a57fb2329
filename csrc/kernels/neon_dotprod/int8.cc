// The int8 4-block kernel with ARMv8.2's dot product (kernels.h, SpmmI8Fn; FEAT_DotProd, HWCAP asimddp). One sdot
// multiplies a block's 4 s8 weights (broadcast) with 4 tokens' 4 activation bytes and adds into 4 int32 sums.
// sdot takes two signed operands and the activations are u8, so they enter as q - 128 (one eor of the sign bit
// per load, shared by the two rows of a pair), and the 128 * (sum of the row's weights) that this leaves out is
// added back with the zero point's term: acc - zero * w_sum = sdot_acc + (128 - zero) * w_sum, the same int32.
// Two rows at a time, 8 vectors (32 tokens) each: 16 sums, 8 activation vectors and 2 weights of the 32 registers.
#include <arm_neon.h>

#include "kernels/compile_time_count.h"
#include "kernels/isa.h"

namespace sparsebert {
namespace {

constexpr int kVecs = 8;  // 4-token vectors per chunk

template <int NV>
inline void store_row(const int32x4_t* acc, int32_t r, const Int8View& w, const float* x_scale,
                      const int32_t* x_zero, float* y, int64_t ldy, const Epilogue& ep) {
  const int32x4_t wsum = vdupq_n_s32(w.w_sum[r]);
  const float32x4_t wscale = vdupq_n_f32(w.w_scale[r]);
  const float32x4_t bias = vdupq_n_f32(ep.bias ? ep.bias[r] : 0.0f);
  const int32x4_t offset = vdupq_n_s32(128);
  for (int v = 0; v < NV; ++v) {
    const int32x4_t zero_term = vmulq_s32(vsubq_s32(offset, vld1q_s32(x_zero + 4 * v)), wsum);
    const int32x4_t centred = vaddq_s32(acc[v], zero_term);
    const float32x4_t s = vmulq_f32(vld1q_f32(x_scale + 4 * v), wscale);
    // Fused as the scalar kernel's std::fma, then the residual added: the same float32 steps, bitwise.
    float32x4_t out = vfmaq_f32(bias, vcvtq_f32_s32(centred), s);
    if (ep.residual) out = vaddq_f32(out, vld1q_f32(ep.residual + r * ep.ldr + 4 * v));
    vst1q_f32(y + r * ldy + 4 * v, out);
  }
}

// The chunk's activation vectors of block `col`, as s8 (q - 128).
template <int NV>
inline void load_block(int8x16_t* xs, const uint8_t* xq, int64_t ldq, uint16_t col) {
  const uint8_t* q = xq + static_cast<int64_t>(col) * ldq * 4;
  const uint8x16_t sign = vdupq_n_u8(0x80);
  for (int v = 0; v < NV; ++v) xs[v] = vreinterpretq_s8_u8(veorq_u8(vld1q_u8(q + 16 * v), sign));
}

template <int NV>
inline void dot(int32x4_t* acc, const int8x16_t* xs, int32_t word) {
  const int8x16_t wq = vreinterpretq_s8_s32(vdupq_n_s32(word));
  for (int v = 0; v < NV; ++v) acc[v] = vdotq_s32(acc[v], xs[v], wq);
}

template <int NV>
void rows_chunk(const Int8View& w, int32_t rb, int32_t re, const uint8_t* xq, int64_t ldq, const float* x_scale,
                const int32_t* x_zero, float* y, int64_t ldy, const Epilogue& ep) {
  int8x16_t xs[NV];
  int32_t r = rb;
  for (; r + 1 < re; r += 2) {
    int32x4_t a0[NV], a1[NV];
    for (int v = 0; v < NV; ++v) a0[v] = a1[v] = vdupq_n_s32(0);
    int32_t j0 = w.ptr[r], j1 = w.ptr[r + 1];
    const int32_t e0 = w.ptr[r + 1], e1 = w.ptr[r + 2];
    for (; j0 < e0 && j1 < e1; ++j0, ++j1) {  // both rows side by side, then whichever is longer alone
      if (w.col[j0] == w.col[j1]) {  // the same block of inputs: one load for both rows
        load_block<NV>(xs, xq, ldq, w.col[j0]);
        dot<NV>(a0, xs, w.val[j0]);
        dot<NV>(a1, xs, w.val[j1]);
      } else {
        load_block<NV>(xs, xq, ldq, w.col[j0]);
        dot<NV>(a0, xs, w.val[j0]);
        load_block<NV>(xs, xq, ldq, w.col[j1]);
        dot<NV>(a1, xs, w.val[j1]);
      }
    }
    for (; j0 < e0; ++j0) load_block<NV>(xs, xq, ldq, w.col[j0]), dot<NV>(a0, xs, w.val[j0]);
    for (; j1 < e1; ++j1) load_block<NV>(xs, xq, ldq, w.col[j1]), dot<NV>(a1, xs, w.val[j1]);
    store_row<NV>(a0, r, w, x_scale, x_zero, y, ldy, ep);
    store_row<NV>(a1, r + 1, w, x_scale, x_zero, y, ldy, ep);
  }
  if (r < re) {
    int32x4_t a0[NV];
    for (int v = 0; v < NV; ++v) a0[v] = vdupq_n_s32(0);
    for (int32_t j = w.ptr[r]; j < w.ptr[r + 1]; ++j) load_block<NV>(xs, xq, ldq, w.col[j]), dot<NV>(a0, xs, w.val[j]);
    store_row<NV>(a0, r, w, x_scale, x_zero, y, ldy, ep);
  }
}

void spmm_block4_i8(const Int8View& w, int32_t row_begin, int32_t row_end, const uint8_t* xq, int64_t ldq,
                    const float* x_scale, const int32_t* x_zero, float* y, int64_t ldy, int32_t n,
                    const Epilogue& ep) {
  constexpr int32_t kChunk = 4 * kVecs;
  for (int32_t t0 = 0; t0 < n; t0 += kChunk) {
    const int nv = n - t0 >= kChunk ? kVecs : (n - t0 + 3) / 4;
    Epilogue e = ep;
    if (ep.residual) e.residual = ep.residual + t0;
    with_count<kVecs>(nv, [&](auto vecs) {
      rows_chunk<decltype(vecs)::value>(w, row_begin, row_end, xq + t0 * 4, ldq, x_scale + t0, x_zero + t0, y + t0,
                                        ldy, e);
    });
  }
}

}  // namespace

// An extension of the neon level, applied only where the CPU reports the dot product (HWCAP asimddp,
// hw.optional.arm.FEAT_DotProd): it replaces the scalar int8 product; the quantizer is the neon level's.
template <>
void add_int8_kernels<Isa::kNeonDotprod>(KernelTable& table) {
  table.spmm_block4_i8 = spmm_block4_i8;
  table.int8_isa = "neon_dotprod";
  table.int8_bounded_pairs = false;
}

}  // namespace sparsebert
