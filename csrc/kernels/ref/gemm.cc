// Scalar sparse and dense GEMMs: the portable fallback and the oracle for the SIMD kernels.
#include "kernels/ref/kernels_ref.h"

#include "kernels/ref/epilogue.h"

namespace sparsebert {
namespace ref {

namespace {

template <int W>
void spmm_pairs(const PairedView& w, int32_t pair_begin, int32_t pair_end, const float* x, int64_t ldx, float* y,
                int64_t ldy, int32_t n, const Epilogue& ep) {
  for (int32_t p = pair_begin; p < pair_end; ++p) {
    for (int32_t side = 0; side < 2; ++side) {
      const int32_t out = w.rows[2 * p + side];
      if (out < 0) continue;
      float* yr = y + out * ldy;
      init_sparse_row(yr, n, out, ep);
      for (int32_t j = w.ptr[p]; j < w.ptr[p + 1]; ++j) {
        const float* xr = x + static_cast<int64_t>(w.idx[2 * j + side]) * W * ldx;
        const float* wv = w.val + (2 * static_cast<int64_t>(j) + side) * W;
        for (int32_t q = 0; q < W; ++q)
          for (int32_t t = 0; t < n; ++t) yr[t] += wv[q] * xr[q * ldx + t];
      }
    }
  }
}

}  // namespace

void spmm_csr(const PairedView& w, int32_t pair_begin, int32_t pair_end, const float* x, int64_t ldx, float* y,
              int64_t ldy, int32_t n, const Epilogue& ep) {
  spmm_pairs<1>(w, pair_begin, pair_end, x, ldx, y, ldy, n, ep);
}

void spmm_block4(const PairedView& w, int32_t pair_begin, int32_t pair_end, const float* x, int64_t ldx, float* y,
                 int64_t ldy, int32_t n, const Epilogue& ep) {
  spmm_pairs<4>(w, pair_begin, pair_end, x, ldx, y, ldy, n, ep);
}

namespace {

// W[i][kk] at w[i * row_stride + kk * col_stride].
void gemm_strided(int32_t m, int32_t n, int32_t k, const float* w, int64_t row_stride, int64_t col_stride,
                  const float* x, int64_t ldx, float* y, int64_t ldy, const Epilogue& ep) {
  for (int32_t i = 0; i < m; ++i) {
    float* yr = y + i * ldy;
    start_row(yr, n, ep);
    for (int32_t kk = 0; kk < k; ++kk) {
      const float wv = w[i * row_stride + kk * col_stride];
      const float* xr = x + kk * ldx;
      for (int32_t t = 0; t < n; ++t) yr[t] += wv * xr[t];
    }
    if (!ep.accumulate) finish_row(yr, n, i, ep);
  }
}

}  // namespace

void finish_rows(const int32_t* rows, int32_t count, float* y, int64_t ldy, int32_t n, const Epilogue& ep) {
  for (int32_t i = 0; i < count; ++i)
    if (rows[i] >= 0) finish_row(y + rows[i] * ldy, n, rows[i], ep);
}

void gemm(int32_t m, int32_t n, int32_t k, const float* w, int64_t ldw, const float* x, int64_t ldx, float* y,
          int64_t ldy, const Epilogue& ep) {
  gemm_strided(m, n, k, w, ldw, 1, x, ldx, y, ldy, ep);
}

void gemm_wt(int32_t m, int32_t n, int32_t k, const float* w, int64_t ldw, const float* x, int64_t ldx, float* y,
             int64_t ldy, const Epilogue& ep) {
  gemm_strided(m, n, k, w, 1, ldw, x, ldx, y, ldy, ep);
}

}  // namespace ref
}  // namespace sparsebert
