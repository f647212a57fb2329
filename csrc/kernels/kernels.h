// Kernel interface: the raw-pointer functions every ISA implements, and the table that holds one ISA's set.
//
// Activations are token vectors: a matrix of F features x n tokens is F rows, each row `ld` floats apart, with
// the tokens contiguous inside a row. A kernel may read and write up to round_up(n, 16) lanes of every row it
// touches (the buffers are padded for that), so no kernel needs masked tails.
#pragma once

#include <cstdint>

namespace sparsebert {

enum class Activation : int32_t { kNone = 0, kGelu = 1, kGeluTanh = 2, kRelu = 3, kTanh = 4 };

// Applied when a GEMM stores a row of Y: y = act(acc + bias[row]) + residual[row][t].
struct Epilogue {
  const float* bias = nullptr;      // one value per row of Y, or null
  Activation act = Activation::kNone;
  const float* residual = nullptr;  // same shape as Y, or null
  int64_t ldr = 0;                  // row stride of residual, in floats
};

// Unstructured sparse weights, rows stored in the packer's order (by nonzero count, so that rows processed
// together have similar lengths). Stored row i holds entries ptr[i]..ptr[i+1] and writes row out_row[i] of Y.
struct CsrView {
  const int32_t* ptr;
  const uint16_t* idx;      // input column k
  const float* val;
  const int32_t* out_row;
};

// 4-block sparse weights: each entry is a block index kb and 4 weights for inputs 4kb..4kb+3 (zero-filled
// where a block is partial). X must hold round_up(K, 4) rows (the padding rows zero).
struct Block4View {
  const int32_t* ptr;
  const uint16_t* idx;      // block index kb
  const float* val;         // 4 floats per entry
  const int32_t* out_row;
};

// Y rows out_row[row_begin..row_end) over tokens [0, n).
using SpmmCsrFn = void (*)(const CsrView& w, int32_t row_begin, int32_t row_end, const float* x, int64_t ldx,
                           float* y, int64_t ldy, int32_t n, const Epilogue& ep);
using SpmmBlock4Fn = void (*)(const Block4View& w, int32_t row_begin, int32_t row_end, const float* x,
                              int64_t ldx, float* y, int64_t ldy, int32_t n, const Epilogue& ep);

// Dense Y[m][n] = W[m][k] X[k][n] (+ epilogue); W row-major with stride ldw.
using GemmFn = void (*)(int32_t m, int32_t n, int32_t k, const float* w, int64_t ldw, const float* x,
                        int64_t ldx, float* y, int64_t ldy, const Epilogue& ep);

// LayerNorm over the `features` rows of each token column; x and y may alias.
using LayerNormFn = void (*)(int32_t features, int32_t n, const float* x, int64_t ldx, float* y, int64_t ldy,
                             const float* gamma, const float* beta, float eps);

// In place: softmax down each of the n columns over the m rows of s, after scaling by `scale`, taking only rows
// with keep[j] != 0 (the others become 0). The caller guarantees at least one row is kept.
using SoftmaxColsFn = void (*)(int32_t m, int32_t n, float* s, int64_t lds, float scale, const uint8_t* keep);

// Runs a register-resident FMA loop (enough independent accumulators to cover the FMA latency) and returns
// the floating-point operations done: timing it gives this core's fp32 FMA peak, the yardstick of the kernel
// benchmark. `sink` (room for 16 floats) receives a value so the loop cannot be optimised away.
using FmaPeakFn = double (*)(int64_t iterations, float* sink);

struct KernelTable {
  const char* isa;
  SpmmCsrFn spmm_csr;
  SpmmBlock4Fn spmm_block4;
  GemmFn gemm;
  LayerNormFn layer_norm;
  SoftmaxColsFn softmax_cols;
  FmaPeakFn fma_peak;
};


}  // namespace sparsebert
