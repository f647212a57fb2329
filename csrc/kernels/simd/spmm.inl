// Sparse x dense kernels, written once over an ISA's `Simd` primitives.
//
// Tokens are vectorised: a chunk of S::kSpmmVecs vectors (64 tokens on AVX-512) of one output row accumulates
// `weight * X[k][chunk]` over the row's entries, the weight broadcast. Unstructured rows share no activation
// loads, so the FMA latency is hidden by walking two rows at once (2 x kSpmmVecs accumulators); the packer pads
// the two rows of a pair to the same length, so the inner loop is one straight run with no remainder.

// A row's starting accumulators: Y's partial sums, or bias + residual (folding them in here saves a pass over Y
// for every layer without an activation).
template <class S, int NV, int64_t LD>
inline void start_sparse_row(typename S::V* acc, const float* yp, int32_t row, int32_t lane, const Epilogue& ep) {
  if (ep.accumulate) {
    for (int v = 0; v < NV; ++v) acc[v] = S::load(yp + v * S::kLanes);
    return;
  }
  const typename S::V b = S::set1(ep.bias ? ep.bias[row] : 0.0f);
  if (ep.residual) {
    const float* r = ep.residual + row * (LD ? LD : ep.ldr) + lane;
    for (int v = 0; v < NV; ++v) acc[v] = S::add(b, S::load(r + v * S::kLanes));
  } else {
    for (int v = 0; v < NV; ++v) acc[v] = b;
  }
}

// See SpmmFn: stores the sums, the caller applies any activation with finish_rows. LD, when not 0, is the row
// stride of x, y and the residual known at compile time (kSpecialisedStride), so addresses need no multiply.
template <class S, int NV, int W, int64_t LD>
inline void spmm_pairs_chunk(const PairedView& w, int32_t pb, int32_t pe, const float* x, int64_t ldx_arg, float* y,
                             int64_t ldy_arg, int32_t c0, const Epilogue& ep) {
  using V = typename S::V;
  const int64_t ldx = LD ? LD : ldx_arg, ldy = LD ? LD : ldy_arg;
  x += c0;
  for (int32_t p = pb; p < pe; ++p) {
    const int32_t o0 = w.rows[2 * p], o1 = w.rows[2 * p + 1];
    const int32_t begin = w.ptr[p], end = w.ptr[p + 1];
    float* y0 = y + o0 * ldy + c0;
    if (o1 < 0) {  // the odd row out of a panel: one row alone
      V a0[NV];
      start_sparse_row<S, NV, LD>(a0, y0, o0, c0, ep);
      for (int32_t j = begin; j < end; ++j) {
        const float* x0 = x + static_cast<int64_t>(w.idx[2 * j]) * W * ldx;
        const float* w0 = w.val + 2 * W * static_cast<int64_t>(j);
        for (int q = 0; q < W; ++q) {
          const V wq = S::set1(w0[q]);
          for (int v = 0; v < NV; ++v) a0[v] = S::fmadd(wq, S::load(x0 + q * ldx + v * S::kLanes), a0[v]);
        }
      }
      for (int v = 0; v < NV; ++v) S::store(y0 + v * S::kLanes, a0[v]);
      continue;
    }
    float* y1 = y + o1 * ldy + c0;
    V a0[NV], a1[NV];
    start_sparse_row<S, NV, LD>(a0, y0, o0, c0, ep);
    start_sparse_row<S, NV, LD>(a1, y1, o1, c0, ep);
    for (int32_t j = begin; j < end; ++j) {
      const float* x0 = x + static_cast<int64_t>(w.idx[2 * j]) * W * ldx;
      const float* x1 = x + static_cast<int64_t>(w.idx[2 * j + 1]) * W * ldx;
      const float* wv = w.val + 2 * W * static_cast<int64_t>(j);
      for (int q = 0; q < W; ++q) {
        const V w0 = S::set1(wv[q]), w1 = S::set1(wv[W + q]);
        for (int v = 0; v < NV; ++v) {
          a0[v] = S::fmadd(w0, S::load(x0 + q * ldx + v * S::kLanes), a0[v]);
          a1[v] = S::fmadd(w1, S::load(x1 + q * ldx + v * S::kLanes), a1[v]);
        }
      }
    }
    for (int v = 0; v < NV; ++v) {
      S::store(y0 + v * S::kLanes, a0[v]);
      S::store(y1 + v * S::kLanes, a1[v]);
    }
  }
}

// Picks the instantiation for a (possibly short, last) chunk of nv vectors. Spelled out rather than through
// with_count (compile_time_count.h): behind a lambda GCC 12 allocates the 4-block kernel's registers worse, 7-15%
// slower on AVX-512.
template <class S, int W, int64_t LD, int NV = S::kSpmmVecs>
inline void spmm_chunk_nv(int nv, const PairedView& w, int32_t pb, int32_t pe, const float* x, int64_t ldx,
                          float* y, int64_t ldy, int32_t c0, const Epilogue& ep) {
  if constexpr (NV > 1) {
    if (nv < NV) return spmm_chunk_nv<S, W, LD, NV - 1>(nv, w, pb, pe, x, ldx, y, ldy, c0, ep);
  }
  spmm_pairs_chunk<S, NV, W, LD>(w, pb, pe, x, ldx, y, ldy, c0, ep);
}

template <class S, int W, int64_t LD>
inline void spmm_strided(const PairedView& w, int32_t pb, int32_t pe, const float* x, int64_t ldx, float* y,
                         int64_t ldy, int32_t n, const Epilogue& ep) {
  constexpr int32_t kChunk = S::kSpmmVecs * S::kLanes;
  for (int32_t c0 = 0; c0 < n; c0 += kChunk) {
    const int32_t rest = n - c0;
    const int nv = rest >= kChunk ? S::kSpmmVecs : (rest + S::kLanes - 1) / S::kLanes;
    spmm_chunk_nv<S, W, LD>(nv, w, pb, pe, x, ldx, y, ldy, c0, ep);
  }
}

template <class S, int W>
inline void spmm_impl(const PairedView& w, int32_t pb, int32_t pe, const float* x, int64_t ldx, float* y,
                      int64_t ldy, int32_t n, const Epilogue& ep) {
  const bool tile_strides = ldx == kSpecialisedStride && ldy == kSpecialisedStride &&
                            (!ep.residual || ep.ldr == kSpecialisedStride);
  if (tile_strides) return spmm_strided<S, W, kSpecialisedStride>(w, pb, pe, x, ldx, y, ldy, n, ep);
  spmm_strided<S, W, 0>(w, pb, pe, x, ldx, y, ldy, n, ep);
}

// The epilogue pass over whole rows (see FinishRowsFn), one activation branch per call.
template <class S, Activation A>
inline void finish_rows_act(const int32_t* rows, int32_t count, float* y, int64_t ldy, int32_t n,
                            const Epilogue& ep) {
  using V = typename S::V;
  for (int32_t i = 0; i < count; ++i) {
    const int32_t row = rows[i];
    if (row < 0) continue;
    float* yr = y + row * ldy;
    const float* res = ep.residual ? ep.residual + row * ep.ldr : nullptr;
    const V b = S::set1(ep.bias ? ep.bias[row] : 0.0f);
    for (int32_t t = 0; t < n; t += S::kLanes) {
      V v = S::add(S::load(yr + t), b);
      if constexpr (A == Activation::kGelu) v = vgelu<S>(v);
      if constexpr (A == Activation::kGeluTanh) v = vgelu_tanh<S>(v);
      if constexpr (A == Activation::kRelu) v = S::max(v, S::zero());
      if constexpr (A == Activation::kTanh) v = vtanh<S>(v);
      if (res) v = S::add(v, S::load(res + t));
      S::store(yr + t, v);
    }
  }
}

template <class S>
inline void finish_rows_impl(const int32_t* rows, int32_t count, float* y, int64_t ldy, int32_t n,
                             const Epilogue& ep) {
  switch (ep.act) {
    case Activation::kGelu: return finish_rows_act<S, Activation::kGelu>(rows, count, y, ldy, n, ep);
    case Activation::kGeluTanh: return finish_rows_act<S, Activation::kGeluTanh>(rows, count, y, ldy, n, ep);
    case Activation::kRelu: return finish_rows_act<S, Activation::kRelu>(rows, count, y, ldy, n, ep);
    case Activation::kTanh: return finish_rows_act<S, Activation::kTanh>(rows, count, y, ldy, n, ep);
    case Activation::kNone: return finish_rows_act<S, Activation::kNone>(rows, count, y, ldy, n, ep);
  }
}
