// LayerNorm and column softmax over token vectors, written once over an ISA's `Simd` primitives. Both reduce
// down the rows of a column, so NV token vectors are processed together for independent accumulators.

template <class S, int NV>
inline void layer_norm_chunk(int32_t features, const float* x, int64_t ldx, float* y, int64_t ldy,
                             const float* gamma, const float* beta, float eps) {
  using V = typename S::V;
  V sum[NV], sq[NV], mean[NV], rstd[NV];
  for (int v = 0; v < NV; ++v) sum[v] = sq[v] = S::zero();
  for (int32_t f = 0; f < features; ++f)
    for (int v = 0; v < NV; ++v) sum[v] = S::add(sum[v], S::load(x + f * ldx + v * S::kLanes));
  const V inv_f = S::set1(1.0f / static_cast<float>(features));
  for (int v = 0; v < NV; ++v) mean[v] = S::mul(sum[v], inv_f);
  // Centred second pass, as in the scalar reference: E[x^2] - E[x]^2 would cancel.
  for (int32_t f = 0; f < features; ++f)
    for (int v = 0; v < NV; ++v) {
      const V d = S::sub(S::load(x + f * ldx + v * S::kLanes), mean[v]);
      sq[v] = S::fmadd(d, d, sq[v]);
    }
  for (int v = 0; v < NV; ++v)
    rstd[v] = S::div(S::set1(1.0f), S::sqrt(S::add(S::mul(sq[v], inv_f), S::set1(eps))));
  for (int32_t f = 0; f < features; ++f) {
    const V g = S::set1(gamma[f]), b = S::set1(beta[f]);
    for (int v = 0; v < NV; ++v) {
      const V d = S::sub(S::load(x + f * ldx + v * S::kLanes), mean[v]);
      S::store(y + f * ldy + v * S::kLanes, S::fmadd(S::mul(d, rstd[v]), g, b));
    }
  }
}

// The first two passes of a column softmax: kept rows of s become e^(scale s - max), the others 0, and inv[v]
// receives 1 / (their sum) for each column vector.
template <class S, int NV>
inline void softmax_exp_chunk(int32_t m, float* s, int64_t lds, float scale, const uint8_t* keep,
                              typename S::V* inv) {
  using V = typename S::V;
  const V sc = S::set1(scale);
  V mx[NV], sum[NV];
  for (int v = 0; v < NV; ++v) {
    mx[v] = S::set1(-__builtin_inff());  // any kept score, however negative, sets the maximum
    sum[v] = S::zero();
  }
  for (int32_t j = 0; j < m; ++j) {
    if (!keep[j]) continue;
    for (int v = 0; v < NV; ++v) mx[v] = S::max(mx[v], S::mul(S::load(s + j * lds + v * S::kLanes), sc));
  }
  // A score more than 69 below its column's maximum gives e^-69 ~ 1e-30 or less, which times 1 / sum can fall into
  // the denormal range, where every later multiply costs a microcode assist (fp32 attention ran 19x slower on a
  // model with sharp heads). Floored there, such a probability is off by less than 1e-30.
  const V floor = S::set1(-69.0f);
  for (int32_t j = 0; j < m; ++j) {
    float* row = s + j * lds;
    for (int v = 0; v < NV; ++v) {
      V e = S::zero();
      if (keep[j]) {
        e = vexp<S>(S::max(S::sub(S::mul(S::load(row + v * S::kLanes), sc), mx[v]), floor));
        sum[v] = S::add(sum[v], e);
      }
      S::store(row + v * S::kLanes, e);
    }
  }
  for (int v = 0; v < NV; ++v) inv[v] = S::div(S::set1(1.0f), sum[v]);
}

template <class S, int NV>
inline void softmax_chunk(int32_t m, float* s, int64_t lds, float scale, const uint8_t* keep) {
  typename S::V inv[NV];
  softmax_exp_chunk<S, NV>(m, s, lds, scale, keep, inv);
  for (int32_t j = 0; j < m; ++j) {
    if (!keep[j]) continue;
    float* row = s + j * lds;
    for (int v = 0; v < NV; ++v) S::store(row + v * S::kLanes, S::mul(S::load(row + v * S::kLanes), inv[v]));
  }
}

template <class S>
inline void layer_norm_impl(int32_t features, int32_t n, const float* x, int64_t ldx, float* y, int64_t ldy,
                       const float* gamma, const float* beta, float eps) {
  constexpr int32_t kChunk = S::kNormVecs * S::kLanes;
  for (int32_t c0 = 0; c0 < n; c0 += kChunk) {
    const int32_t rest = n - c0;
    const int nv = rest >= kChunk ? S::kNormVecs : (rest + S::kLanes - 1) / S::kLanes;
    with_count<S::kNormVecs>(nv, [&](auto nv_const) {
      layer_norm_chunk<S, decltype(nv_const)::value>(features, x + c0, ldx, y + c0, ldy, gamma, beta, eps);
    });
  }
}

template <class S>
inline void softmax_cols_impl(int32_t m, int32_t n, float* s, int64_t lds, float scale, const uint8_t* keep) {
  constexpr int32_t kChunk = S::kNormVecs * S::kLanes;
  for (int32_t c0 = 0; c0 < n; c0 += kChunk) {
    const int32_t rest = n - c0;
    const int nv = rest >= kChunk ? S::kNormVecs : (rest + S::kLanes - 1) / S::kLanes;
    with_count<S::kNormVecs>(nv, [&](auto nv_const) {
      softmax_chunk<S, decltype(nv_const)::value>(m, s + c0, lds, scale, keep);
    });
  }
}
