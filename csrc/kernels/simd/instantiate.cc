// The kernels written once over an ISA's `Simd` primitives, instantiated for one ISA. CMake compiles this file
// once per SIMD ISA (sparsebert_add_isa in CMakeLists.txt) with that ISA's flags and three definitions:
// SPARSEBERT_SIMD_HEADER (the ISA's kernels/<isa>/simd.h), SPARSEBERT_SIMD_NS (the namespace of its `Simd`) and
// SPARSEBERT_SIMD_ISA (its Isa enumerator). Everything but the table entry has internal linkage, so an inline
// helper compiled for one ISA can never be linked into another ISA's code.
#include SPARSEBERT_SIMD_HEADER

#include "kernels/compile_time_count.h"
#include "kernels/isa.h"

namespace sparsebert {
namespace {

using Simd = SPARSEBERT_SIMD_NS::Simd;

#include "kernels/simd/vmath.inl"
#include "kernels/simd/spmm.inl"
#include "kernels/simd/gemm.inl"
#include "kernels/simd/norm.inl"
#include "kernels/simd/peak.inl"

void spmm_csr(const PairedView& w, int32_t pair_begin, int32_t pair_end, const float* x, int64_t ldx, float* y,
              int64_t ldy, int32_t n, const Epilogue& ep) {
  spmm_impl<Simd, 1>(w, pair_begin, pair_end, x, ldx, y, ldy, n, ep);
}

void spmm_block4(const PairedView& w, int32_t pair_begin, int32_t pair_end, const float* x, int64_t ldx, float* y,
                 int64_t ldy, int32_t n, const Epilogue& ep) {
  spmm_impl<Simd, 4>(w, pair_begin, pair_end, x, ldx, y, ldy, n, ep);
}

void finish_rows(const int32_t* rows, int32_t count, float* y, int64_t ldy, int32_t n, const Epilogue& ep) {
  finish_rows_impl<Simd>(rows, count, y, ldy, n, ep);
}

void gemm(int32_t m, int32_t n, int32_t k, const float* w, int64_t ldw, const float* x, int64_t ldx, float* y,
          int64_t ldy, const Epilogue& ep) {
  gemm_impl<Simd, false>(m, n, k, w, ldw, x, ldx, y, ldy, ep);
}

void gemm_wt(int32_t m, int32_t n, int32_t k, const float* w, int64_t ldw, const float* x, int64_t ldx, float* y,
             int64_t ldy, const Epilogue& ep) {
  gemm_impl<Simd, true>(m, n, k, w, ldw, x, ldx, y, ldy, ep);
}

void layer_norm(int32_t features, int32_t n, const float* x, int64_t ldx, float* y, int64_t ldy,
                const float* gamma, const float* beta, float eps) {
  layer_norm_impl<Simd>(features, n, x, ldx, y, ldy, gamma, beta, eps);
}

void softmax_cols(int32_t m, int32_t n, float* s, int64_t lds, float scale, const uint8_t* keep) {
  softmax_cols_impl<Simd>(m, n, s, lds, scale, keep);
}

double fma_peak(int64_t iterations, float* sink) { return fma_peak_impl<Simd>(iterations, sink); }

}  // namespace

template <>
void add_simd_kernels<Isa::SPARSEBERT_SIMD_ISA>(KernelTable& table) {
  table.spmm_csr = spmm_csr;
  table.spmm_block4 = spmm_block4;
  table.finish_rows = finish_rows;
  table.gemm = gemm;
  table.gemm_wt = gemm_wt;
  table.layer_norm = layer_norm;
  table.softmax_cols = softmax_cols;
  table.fma_peak = fma_peak;
}

}  // namespace sparsebert
