// The AVX-512 VNNI int8 4-block kernel (kernels.h, SpmmI8Fn). One vpdpbusd multiplies a block's 4 s8 weights
// (broadcast) with 16 tokens' 4 u8 activations and adds into 16 int32 sums: 64 multiply-adds per instruction
// and per activation load, where the fp32 kernel gets 16. Two rows at a time, 4 vectors (64 tokens) each, keep
// 8 independent sums in flight.
#include <immintrin.h>

#include <algorithm>

#include "kernels/compile_time_count.h"
#include "kernels/isa.h"

namespace sparsebert {
namespace {

// LD, when not 0, is the row stride of xq (in tokens) and of y and the residual (in floats) known at compile time
// (kSpecialisedStride): a block index becomes an address by a shift.
template <int NV, int64_t LD>
inline void store_row(const __m512i* acc, int32_t r, const Int8View& w, const float* x_scale,
                      const int32_t* x_zero, float* y, int64_t ldy, const Epilogue& ep) {
  const __m512i wsum = _mm512_set1_epi32(w.w_sum[r]);
  const __m512 wscale = _mm512_set1_ps(w.w_scale[r]);
  const __m512 bias = _mm512_set1_ps(ep.bias ? ep.bias[r] : 0.0f);
  for (int v = 0; v < NV; ++v) {
    const __m512i centred = _mm512_sub_epi32(acc[v], _mm512_mullo_epi32(_mm512_loadu_si512(x_zero + 16 * v), wsum));
    const __m512 s = _mm512_mul_ps(_mm512_loadu_ps(x_scale + 16 * v), wscale);
    __m512 out = _mm512_fmadd_ps(_mm512_cvtepi32_ps(centred), s, bias);
    if (ep.residual) out = _mm512_add_ps(out, _mm512_loadu_ps(ep.residual + r * (LD ? LD : ep.ldr) + 16 * v));
    _mm512_storeu_ps(y + r * (LD ? LD : ldy) + 16 * v, out);
  }
}

template <int NV, int64_t LD>
inline void accumulate(__m512i* acc, const Int8View& w, int32_t j, const uint8_t* xq, int64_t ldq) {
  const __m512i wq = _mm512_set1_epi32(w.val[j]);
  const uint8_t* q = xq + static_cast<int64_t>(w.col[j]) * (LD ? LD : ldq) * 4;
  for (int v = 0; v < NV; ++v) acc[v] = _mm512_dpbusd_epi32(acc[v], _mm512_loadu_si512(q + 64 * v), wq);
}

// Blocks [j, end) of one row (the longer row's rest, or a row without a partner). One set of NV sums would be a
// chain of dependent vpdpbusd; two sets, even and odd blocks, added at the end, keep twice as many in flight.
// Integer sums: the order does not change the result.
template <int NV, int64_t LD>
inline void accumulate_alone(__m512i* acc, const Int8View& w, int32_t j, int32_t end, const uint8_t* xq,
                             int64_t ldq) {
  __m512i odd[NV];
  for (int v = 0; v < NV; ++v) odd[v] = _mm512_setzero_si512();
  for (; j + 1 < end; j += 2) {
    accumulate<NV, LD>(acc, w, j, xq, ldq);
    accumulate<NV, LD>(odd, w, j + 1, xq, ldq);
  }
  if (j < end) accumulate<NV, LD>(acc, w, j, xq, ldq);
  for (int v = 0; v < NV; ++v) acc[v] = _mm512_add_epi32(acc[v], odd[v]);
}

template <int NV, int64_t LD>
void rows_chunk(const Int8View& w, int32_t rb, int32_t re, const uint8_t* xq, int64_t ldq, const float* x_scale,
                const int32_t* x_zero, float* y, int64_t ldy, const Epilogue& ep) {
  int32_t r = rb;
  for (; r + 1 < re; r += 2) {
    __m512i a0[NV], a1[NV];
    for (int v = 0; v < NV; ++v) a0[v] = a1[v] = _mm512_setzero_si512();
    const int32_t j0 = w.ptr[r], j1 = w.ptr[r + 1], e0 = w.ptr[r + 1], e1 = w.ptr[r + 2];
    // Both rows side by side as far as the shorter goes (one trip count), then the longer one's rest.
    const int32_t both = std::min(e0 - j0, e1 - j1);
    for (int32_t i = 0; i < both; ++i) {
      accumulate<NV, LD>(a0, w, j0 + i, xq, ldq);
      accumulate<NV, LD>(a1, w, j1 + i, xq, ldq);
    }
    if (j0 + both < e0) accumulate_alone<NV, LD>(a0, w, j0 + both, e0, xq, ldq);
    if (j1 + both < e1) accumulate_alone<NV, LD>(a1, w, j1 + both, e1, xq, ldq);
    store_row<NV, LD>(a0, r, w, x_scale, x_zero, y, ldy, ep);
    store_row<NV, LD>(a1, r + 1, w, x_scale, x_zero, y, ldy, ep);
  }
  if (r < re) {
    __m512i a0[NV];
    for (int v = 0; v < NV; ++v) a0[v] = _mm512_setzero_si512();
    accumulate_alone<NV, LD>(a0, w, w.ptr[r], w.ptr[r + 1], xq, ldq);
    store_row<NV, LD>(a0, r, w, x_scale, x_zero, y, ldy, ep);
  }
}

template <int64_t LD>
void spmm_strided(const Int8View& w, int32_t row_begin, int32_t row_end, const uint8_t* xq, int64_t ldq,
                  const float* x_scale, const int32_t* x_zero, float* y, int64_t ldy, int32_t n,
                  const Epilogue& ep) {
  for (int32_t t0 = 0; t0 < n; t0 += 64) {
    const int nv = n - t0 >= 64 ? 4 : (n - t0 + 15) / 16;
    const uint8_t* q = xq + t0 * 4;
    float* yt = y + t0;
    Epilogue e = ep;
    if (ep.residual) e.residual = ep.residual + t0;
    with_count<4>(nv, [&](auto vecs) {
      rows_chunk<decltype(vecs)::value, LD>(w, row_begin, row_end, q, ldq, x_scale + t0, x_zero + t0, yt, ldy, e);
    });
  }
}

void spmm_block4_i8(const Int8View& w, int32_t row_begin, int32_t row_end, const uint8_t* xq, int64_t ldq,
                    const float* x_scale, const int32_t* x_zero, float* y, int64_t ldy, int32_t n,
                    const Epilogue& ep) {
  const bool tile_strides = ldq == kSpecialisedStride && ldy == kSpecialisedStride &&
                            (!ep.residual || ep.ldr == kSpecialisedStride);
  if (tile_strides)
    return spmm_strided<kSpecialisedStride>(w, row_begin, row_end, xq, ldq, x_scale, x_zero, y, ldy, n, ep);
  spmm_strided<0>(w, row_begin, row_end, xq, ldq, x_scale, x_zero, y, ldy, n, ep);
}

}  // namespace

// An extension of the avx512 level, applied only where CPUID reports VNNI: it replaces the AVX2 int8 product.
template <>
void add_int8_kernels<Isa::kAvx512Vnni>(KernelTable& table) {
  table.spmm_block4_i8 = spmm_block4_i8;
  table.int8_isa = "avx512_vnni";
  table.int8_bounded_pairs = false;
}

}  // namespace sparsebert
