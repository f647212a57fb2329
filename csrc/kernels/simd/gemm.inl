// Dense GEMM Y[m][n] = W[m][k] X[k][n], written once over an ISA's `Simd` primitives: a register tile of
// R rows x NV token vectors; each step loads NV activation vectors once and reuses them for R broadcast weights.
// WT selects the transposed W (W[r][k] at w[k * ldw + r]).

template <class S, bool WT, int R, int NV>
inline void gemm_tile(int32_t k, const float* w, int64_t ldw, const float* x, int64_t ldx, float* y, int64_t ldy,
                      int32_t row0, int32_t c0, const Epilogue& ep) {
  using V = typename S::V;
  V acc[R][NV];
  // Bias (and, without an activation, the residual) start the accumulators, so most tiles store once and need
  // no epilogue pass.
  const bool fold_residual = ep.residual && ep.act == Activation::kNone;
  for (int r = 0; r < R; ++r) {
    const V b = S::set1(ep.bias ? ep.bias[row0 + r] : 0.0f);
    for (int v = 0; v < NV; ++v) {
      if (ep.accumulate) acc[r][v] = S::load(y + (row0 + r) * ldy + c0 + v * S::kLanes);
      else if (fold_residual) acc[r][v] = S::add(b, S::load(ep.residual + (row0 + r) * ep.ldr + c0 + v * S::kLanes));
      else acc[r][v] = b;
    }
  }
  const float* xc = x + c0;
  for (int32_t kk = 0; kk < k; ++kk) {
    V xv[NV];
    for (int v = 0; v < NV; ++v) xv[v] = S::load(xc + kk * ldx + v * S::kLanes);
    for (int r = 0; r < R; ++r) {
      const V wv = S::set1(WT ? w[kk * ldw + r] : w[r * ldw + kk]);
      for (int v = 0; v < NV; ++v) acc[r][v] = S::fmadd(wv, xv[v], acc[r][v]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) S::store(y + (row0 + r) * ldy + c0 + v * S::kLanes, acc[r][v]);
  if (ep.act != Activation::kNone && !ep.accumulate) {
    Epilogue rest = ep;
    rest.bias = nullptr;  // already in the sums
    for (int r = 0; r < R; ++r) finish_row<S, NV>(y + (row0 + r) * ldy + c0, row0 + r, c0, rest);
  }
}

template <class S, bool WT>
inline void gemm_impl(int32_t m, int32_t n, int32_t k, const float* w, int64_t ldw, const float* x, int64_t ldx,
                 float* y, int64_t ldy, const Epilogue& ep) {
  constexpr int32_t kChunk = S::kGemmVecs * S::kLanes;
  // Token chunks outside, rows inside: the chunk's activation panel stays in cache while W streams past.
  for (int32_t c0 = 0; c0 < n; c0 += kChunk) {
    const int32_t rest = n - c0;
    const int nv = rest >= kChunk ? S::kGemmVecs : (rest + S::kLanes - 1) / S::kLanes;
    for (int32_t i = 0; i < m; i += S::kGemmRows) {
      const int rows = (m - i) < S::kGemmRows ? (m - i) : S::kGemmRows;
      const float* wi = WT ? w + i : w + i * ldw;
      with_count<S::kGemmRows>(rows, [&](auto r) {
        with_count<S::kGemmVecs>(nv, [&](auto vecs) {
          gemm_tile<S, WT, decltype(r)::value, decltype(vecs)::value>(k, wi, ldw, x, ldx, y, ldy, i, c0, ep);
        });
      });
    }
  }
}
