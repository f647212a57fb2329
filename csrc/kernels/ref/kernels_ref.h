// The scalar kernels (baseline ISA): fallback for any CPU and the oracle for the SIMD kernels. They are written
// independently of the SIMD templates in kernels/simd/ so that the two can check each other.
#pragma once

#include "kernels/kernels.h"

namespace sparsebert {
namespace ref {

void spmm_csr(const PairedView& w, int32_t pair_begin, int32_t pair_end, const float* x, int64_t ldx, float* y,
              int64_t ldy, int32_t n, const Epilogue& ep);
void spmm_block4(const PairedView& w, int32_t pair_begin, int32_t pair_end, const float* x, int64_t ldx, float* y,
                 int64_t ldy, int32_t n, const Epilogue& ep);
void finish_rows(const int32_t* rows, int32_t count, float* y, int64_t ldy, int32_t n, const Epilogue& ep);
void gemm(int32_t m, int32_t n, int32_t k, const float* w, int64_t ldw, const float* x, int64_t ldx, float* y,
          int64_t ldy, const Epilogue& ep);
void gemm_wt(int32_t m, int32_t n, int32_t k, const float* w, int64_t ldw, const float* x, int64_t ldx, float* y,
             int64_t ldy, const Epilogue& ep);
void layer_norm(int32_t features, int32_t n, const float* x, int64_t ldx, float* y, int64_t ldy,
                const float* gamma, const float* beta, float eps);
void softmax_cols(int32_t m, int32_t n, float* s, int64_t lds, float scale, const uint8_t* keep);
double fma_peak(int64_t iterations, float* sink);
void quantize(int32_t k, int32_t n, const float* x, int64_t ldx, uint8_t* xq, int64_t ldq, float* scale,
              int32_t* zero);
void spmm_block4_i8(const Int8View& w, int32_t row_begin, int32_t row_end, const uint8_t* xq, int64_t ldq,
                    const float* x_scale, const int32_t* x_zero, float* y, int64_t ldy, int32_t n,
                    const Epilogue& ep);

}  // namespace ref
}  // namespace sparsebert
