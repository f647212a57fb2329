// Scalar sparse and dense GEMMs: the portable fallback and the oracle for the SIMD kernels.
#include "kernels/ref/kernels_ref.h"

#include "kernels/ref/epilogue.h"

namespace sparsebert {
namespace ref {

void spmm_csr(const CsrView& w, int32_t row_begin, int32_t row_end, const float* x, int64_t ldx, float* y,
              int64_t ldy, int32_t n, const Epilogue& ep) {
  for (int32_t r = row_begin; r < row_end; ++r) {
    const int32_t out = w.out_row[r];
    float* yr = y + out * ldy;
    for (int32_t t = 0; t < n; ++t) yr[t] = 0.0f;
    for (int32_t j = w.ptr[r]; j < w.ptr[r + 1]; ++j) {
      const float wv = w.val[j];
      const float* xr = x + w.idx[j] * ldx;
      for (int32_t t = 0; t < n; ++t) yr[t] += wv * xr[t];
    }
    finish_row(yr, n, out, ep);
  }
}

void spmm_block4(const Block4View& w, int32_t row_begin, int32_t row_end, const float* x, int64_t ldx, float* y,
                 int64_t ldy, int32_t n, const Epilogue& ep) {
  for (int32_t r = row_begin; r < row_end; ++r) {
    const int32_t out = w.out_row[r];
    float* yr = y + out * ldy;
    for (int32_t t = 0; t < n; ++t) yr[t] = 0.0f;
    for (int32_t j = w.ptr[r]; j < w.ptr[r + 1]; ++j) {
      const float* wv = w.val + 4 * static_cast<int64_t>(j);
      const float* xr = x + 4 * static_cast<int64_t>(w.idx[j]) * ldx;
      for (int32_t q = 0; q < 4; ++q)
        for (int32_t t = 0; t < n; ++t) yr[t] += wv[q] * xr[q * ldx + t];
    }
    finish_row(yr, n, out, ep);
  }
}

void gemm(int32_t m, int32_t n, int32_t k, const float* w, int64_t ldw, const float* x, int64_t ldx, float* y,
          int64_t ldy, const Epilogue& ep) {
  for (int32_t i = 0; i < m; ++i) {
    float* yr = y + i * ldy;
    const float* wr = w + i * ldw;
    for (int32_t t = 0; t < n; ++t) yr[t] = 0.0f;
    for (int32_t kk = 0; kk < k; ++kk) {
      const float wv = wr[kk];
      const float* xr = x + kk * ldx;
      for (int32_t t = 0; t < n; ++t) yr[t] += wv * xr[t];
    }
    finish_row(yr, n, i, ep);
  }
}

}  // namespace ref
}  // namespace sparsebert
