// Sparse x dense kernels, written once over an ISA's `Simd` primitives.
//
// Tokens are vectorised: a chunk of S::kSpmmVecs vectors (64 tokens on AVX-512) of one output row accumulates
// `weight * X[k][chunk]` over the row's nonzeros, the weight broadcast. Unstructured rows share no activation
// loads, so the only way to hide the FMA latency is more independent accumulators: two rows are walked side by
// side (the packer sorted rows by length, so neighbours are about as long), then the longer one's remainder alone.

// Entries [j, end) of an unstructured row into acc.
template <class S, int NV>
inline void accumulate_entries(const CsrView& w, int32_t j, int32_t end, const float* x, int64_t ldx,
                               typename S::V* acc) {
  for (; j < end; ++j) {
    const typename S::V wv = S::set1(w.val[j]);
    const float* xr = x + w.idx[j] * ldx;
    for (int v = 0; v < NV; ++v) acc[v] = S::fmadd(wv, S::load(xr + v * S::kLanes), acc[v]);
  }
}

// Entries [j, end) of a 4-block row into acc: one index serves four consecutive input rows.
template <class S, int NV>
inline void accumulate_entries(const Block4View& w, int32_t j, int32_t end, const float* x, int64_t ldx,
                               typename S::V* acc) {
  for (; j < end; ++j) {
    const float* wv = w.val + 4 * static_cast<int64_t>(j);
    const float* xr = x + 4 * static_cast<int64_t>(w.idx[j]) * ldx;
    for (int q = 0; q < 4; ++q) {
      const typename S::V wq = S::set1(wv[q]);
      for (int v = 0; v < NV; ++v) acc[v] = S::fmadd(wq, S::load(xr + q * ldx + v * S::kLanes), acc[v]);
    }
  }
}

// One chunk of NV vectors starting at token c0, for stored rows [rb, re).
template <class S, int NV, class View>
inline void spmm_chunk(const View& w, int32_t rb, int32_t re, const float* x, int64_t ldx, float* y, int64_t ldy,
                       int32_t c0, const Epilogue& ep) {
  using V = typename S::V;
  x += c0;
  int32_t r = rb;
  for (; r + 1 < re; r += 2) {
    V a0[NV], a1[NV];
    for (int v = 0; v < NV; ++v) a0[v] = a1[v] = S::zero();
    const int32_t b0 = w.ptr[r], e0 = w.ptr[r + 1], b1 = w.ptr[r + 1], e1 = w.ptr[r + 2];
    const int32_t common = (e0 - b0) < (e1 - b1) ? (e0 - b0) : (e1 - b1);
    for (int32_t q = 0; q < common; ++q) {
      accumulate_entries<S, NV>(w, b0 + q, b0 + q + 1, x, ldx, a0);
      accumulate_entries<S, NV>(w, b1 + q, b1 + q + 1, x, ldx, a1);
    }
    accumulate_entries<S, NV>(w, b0 + common, e0, x, ldx, a0);
    accumulate_entries<S, NV>(w, b1 + common, e1, x, ldx, a1);
    const int32_t o0 = w.out_row[r], o1 = w.out_row[r + 1];
    for (int v = 0; v < NV; ++v) {
      const int32_t lane = c0 + v * S::kLanes;
      store_with_epilogue<S>(a0[v], o0, y + o0 * ldy + lane, lane, ep);
      store_with_epilogue<S>(a1[v], o1, y + o1 * ldy + lane, lane, ep);
    }
  }
  if (r < re) {
    V a0[NV];
    for (int v = 0; v < NV; ++v) a0[v] = S::zero();
    accumulate_entries<S, NV>(w, w.ptr[r], w.ptr[r + 1], x, ldx, a0);
    const int32_t o0 = w.out_row[r];
    for (int v = 0; v < NV; ++v) {
      const int32_t lane = c0 + v * S::kLanes;
      store_with_epilogue<S>(a0[v], o0, y + o0 * ldy + lane, lane, ep);
    }
  }
}

// Picks the instantiation for a (possibly short, last) chunk of nv vectors.
template <class S, int NV = S::kSpmmVecs, class View>
inline void spmm_chunk_nv(int nv, const View& w, int32_t rb, int32_t re, const float* x, int64_t ldx, float* y,
                          int64_t ldy, int32_t c0, const Epilogue& ep) {
  if constexpr (NV > 1) {
    if (nv < NV) return spmm_chunk_nv<S, NV - 1>(nv, w, rb, re, x, ldx, y, ldy, c0, ep);
  }
  spmm_chunk<S, NV>(w, rb, re, x, ldx, y, ldy, c0, ep);
}

template <class S, class View>
inline void spmm_impl(const View& w, int32_t rb, int32_t re, const float* x, int64_t ldx, float* y, int64_t ldy,
                 int32_t n, const Epilogue& ep) {
  constexpr int32_t kChunk = S::kSpmmVecs * S::kLanes;
  for (int32_t c0 = 0; c0 < n; c0 += kChunk) {
    const int32_t rest = n - c0;
    const int nv = rest >= kChunk ? S::kSpmmVecs : (rest + S::kLanes - 1) / S::kLanes;
    spmm_chunk_nv<S>(nv, w, rb, re, x, ldx, y, ldy, c0, ep);
  }
}
