// Kernel interface: the raw-pointer functions every ISA implements, and the table that holds one ISA's set.
//
// Activations are token vectors: a matrix of F features x n tokens is F rows, each row `ld` floats apart, with
// the tokens contiguous inside a row. A kernel may read and write up to round_up(n, 16) lanes of every row it
// touches (the buffers are padded for that), so no kernel needs masked tails.
#pragma once

#include <cstdint>

namespace sparsebert {

// The row stride (in elements) the sparse kernels are compiled for besides the general one: the engine's token
// tile (common/tile_matrix.h checks they agree). With it a nonzero's index becomes an address by a shift and
// constant offsets, which on AVX-512 frees the registers the general stride's offsets take.
constexpr int64_t kSpecialisedStride = 64;

enum class Activation : int32_t { kNone = 0, kGelu = 1, kGeluTanh = 2, kRelu = 3, kTanh = 4 };

// Applied when a GEMM stores a row of Y: y = act(acc + bias[row]) + residual[row][t].
// A sparse product split over blocks of K (so each block's activation panel stays in L1) runs the kernel once
// per block, every block after the first with `accumulate` set.
struct Epilogue {
  const float* bias = nullptr;      // one value per row of Y, or null
  Activation act = Activation::kNone;
  const float* residual = nullptr;  // same shape as Y, or null
  int64_t ldr = 0;                  // row stride of residual, in floats
  // A later block of a split product: Y += W X, nothing else (bias and residual went into the first block, an
  // activation comes with finish_rows after the last).
  bool accumulate = false;
};

// Sparse weights of one K-block, stored as row pairs: the kernel walks two rows side by side (8 independent
// accumulators on AVX-512), and the packer pads each pair to equal length so the loop has no remainder.
// Pair p writes rows rows[2p] and rows[2p + 1] of Y (the second is -1 when the pair holds one row) and owns
// entries ptr[p] .. ptr[p + 1]. Entry e holds one index per row, idx[2e] and idx[2e + 1], and `width` weights
// per row, val[2 * width * e ..]: the first row's weights, then the second's. Unstructured entries (width 1)
// index an input column k; 4-block entries (width 4) index a block kb covering inputs 4kb .. 4kb + 3 (X must hold
// round_up(K, 4) rows, the padding rows zero). Padding entries have weight 0 and a valid index.
struct PairedView {
  const int32_t* ptr;
  const int32_t* rows;
  const uint16_t* idx;
  const float* val;
};

// Pairs [pair_begin, pair_end) over tokens [0, n); width 1 (unstructured) and width 4 (4-block). Each row starts
// from Y's partial sums when ep.accumulate, else from bias[row] + residual[row][t] (each when given); the
// kernel adds its products and stores the sums. ep.act is ignored: the caller applies an activation with
// finish_rows (and passes the residual there instead, since it comes after the activation).
using SpmmFn = void (*)(const PairedView& w, int32_t pair_begin, int32_t pair_end, const float* x, int64_t ldx,
                        float* y, int64_t ldy, int32_t n, const Epilogue& ep);

// Dense Y[m][n] = W[m][k] X[k][n] (+ epilogue); W row-major with stride ldw. The `gemm_wt` entry takes W
// transposed instead (W[r][k] at w[k * ldw + r]), so attention can use keys as GEMM rows without transposing.
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

// Applies the epilogue in place to tokens [0, n) of the listed rows of Y (entries < 0 are skipped; ep.accumulate
// is ignored). The sparse kernels leave activations to this pass: a separate loop over many independent rows
// keeps the long GELU dependency chains overlapped.
using FinishRowsFn = void (*)(const int32_t* rows, int32_t count, float* y, int64_t ldy, int32_t n,
                              const Epilogue& ep);

// ---- int8: u8 activations x s8 weights, 4-blocks along K (one 32-bit word per block and token) ----
//
// A quantized activation tile holds token t's features 4kb .. 4kb + 3 as the 4 bytes at xq + (kb * ldq + t) * 4,
// so one 32-bit lane of a VNNI dot product (vpdpbusd) covers one block of one token. Each token has its own
// scale and zero point: x ~= scale[t] * (q - zero[t]), q in [0, 255], with 0.0 exactly representable (zero[t]).

// Quantizes features [0, k) of tokens [0, n) of x (rows ldx floats apart) into xq, scale and zero; feature rows
// k .. round_up(k, 4) - 1 of xq get zero[t] (the value 0.0). lo = min(0, min x), hi = max(0, max x),
// scale = (hi - lo) / 255 (1 when that is 0 or not finite), inv = 1 / scale,
// zero = clamp(nearbyint(-lo * inv), 0, 255), q = clamp(nearbyint(x * inv) + zero, 0, 255), a NaN giving 0;
// every ISA computes exactly these float32 steps.
using QuantizeFn = void (*)(int32_t k, int32_t n, const float* x, int64_t ldx, uint8_t* xq, int64_t ldq,
                            float* scale, int32_t* zero);

// An int8 4-block weight matrix: row r owns blocks ptr[r] .. ptr[r + 1]; block j covers inputs 4 col[j] ..
// 4 col[j] + 3 and holds their 4 s8 weights in the bytes of val[j] (byte q for input 4 col[j] + q). Row r's
// weights are w_scale[r] * the s8 values, and w_sum[r] is the sum of its s8 values (for the zero point).
struct Int8View {
  const int32_t* ptr;
  const uint16_t* col;
  const int32_t* val;
  const float* w_scale;
  const int32_t* w_sum;
};

// Rows [row_begin, row_end), tokens [0, n): acc = sum_j sum_q s8 * u8 exactly in int32, then
// y[r][t] = fma(float(acc - zero[t] * w_sum[r]), scale[t] * w_scale[r], bias[r]) (+ residual[r][t] when given).
// ep.act and ep.accumulate are ignored (an activation is applied afterwards with finish_rows). Every ISA gives
// bitwise the same y. May compute and store up to round_up(n, 16) tokens.
//
// A table with int8_bounded_pairs set (the AVX2 kernel: vpmaddubsw adds two u8 x s8 products in saturating 16
// bits) takes only blocks whose byte pairs (bytes 0-1, bytes 2-3) have positive weights summing to at most 128 and
// negative ones to at least -128, so that no pair sum leaves [-255 * 128, 255 * 128]. Any block splits into two
// such blocks on the same inputs (w / 2 rounded toward zero, and the rest): the sums, and so y, do not change.
using SpmmI8Fn = void (*)(const Int8View& w, int32_t row_begin, int32_t row_end, const uint8_t* xq, int64_t ldq,
                          const float* x_scale, const int32_t* x_zero, float* y, int64_t ldy, int32_t n,
                          const Epilogue& ep);

// Every entry of a kernel table, listed once. The table's fields, the names `_core.KERNELS` reports and the
// contract tests (tests/test_kernel_table.py must cover each name) all come from this list, so a kernel added
// here is tested on every ISA or the suite fails.
#define SPARSEBERT_KERNELS(X)      \
  X(SpmmFn, spmm_csr)              \
  X(SpmmFn, spmm_block4)           \
  X(FinishRowsFn, finish_rows)     \
  X(GemmFn, gemm)                  \
  X(GemmFn, gemm_wt)               \
  X(LayerNormFn, layer_norm)       \
  X(SoftmaxColsFn, softmax_cols)   \
  X(FmaPeakFn, fma_peak)           \
  X(QuantizeFn, quantize)          \
  X(SpmmI8Fn, spmm_block4_i8)

// One ISA path's kernels: the scalar table, upgraded entry by entry by each ISA level the CPU has (dispatch.cc).
struct KernelTable {
  const char* isa = "scalar";
#define SPARSEBERT_KERNEL_FIELD(type, name) type name = nullptr;
  SPARSEBERT_KERNELS(SPARSEBERT_KERNEL_FIELD)
#undef SPARSEBERT_KERNEL_FIELD
  const char* int8_isa = "scalar";  // spmm_block4_i8's instructions: "avx512_vnni", "avx2", "neon_dotprod", "scalar"
  bool int8_bounded_pairs = false;  // spmm_block4_i8 needs blocks with bounded byte pairs (see SpmmI8Fn)
};

}  // namespace sparsebert
