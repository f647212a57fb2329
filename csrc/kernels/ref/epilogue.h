// Scalar epilogue: the definition the SIMD epilogues are tested against.
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/kernels.h"

namespace sparsebert {
namespace ref {

inline float activate(float v, Activation act) {
  switch (act) {
    case Activation::kGelu:
      return 0.5f * v * (1.0f + std::erf(v * 0.70710678118654752f));
    case Activation::kGeluTanh: {
      const float inner = 0.7978845608028654f * (v + 0.044715f * v * v * v);
      return 0.5f * v * (1.0f + std::tanh(inner));
    }
    case Activation::kRelu:
      return v > 0.0f ? v : 0.0f;
    case Activation::kTanh:
      return std::tanh(v);
    case Activation::kNone:
      break;
  }
  return v;
}

// Zeroes row y before accumulation, unless the epilogue continues a previous K-block's sums.
inline void start_row(float* y, int32_t n, const Epilogue& ep) {
  if (!ep.accumulate)
    for (int32_t t = 0; t < n; ++t) y[t] = 0.0f;
}

// Starts row `row` of a sparse product: Y's partial sums when continuing a K-block, else bias + residual.
inline void init_sparse_row(float* y, int32_t n, int32_t row, const Epilogue& ep) {
  if (ep.accumulate) return;
  const float b = ep.bias ? ep.bias[row] : 0.0f;
  const float* res = ep.residual ? ep.residual + row * ep.ldr : nullptr;
  for (int32_t t = 0; t < n; ++t) y[t] = res ? b + res[t] : b;
}

// Finishes row `row` of Y whose n accumulated values are in y.
inline void finish_row(float* y, int32_t n, int32_t row, const Epilogue& ep) {
  const float b = ep.bias ? ep.bias[row] : 0.0f;
  const float* res = ep.residual ? ep.residual + row * ep.ldr : nullptr;
  for (int32_t t = 0; t < n; ++t) {
    float v = activate(y[t] + b, ep.act);
    if (res) v += res[t];
    y[t] = v;
  }
}

}  // namespace ref
}  // namespace sparsebert
