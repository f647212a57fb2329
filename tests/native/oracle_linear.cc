// The kernel oracle's linear cases (see kernel_oracle.cc): the sparse products (unstructured and 4-block), the
// epilogue pass and the dense products, each output within 2 B of the scalar table's, B its fp32 error bound.
#include <algorithm>

#include "oracle_check.h"

namespace oracle {

using sparsebert::Activation;
using sparsebert::Epilogue;
using sparsebert::KernelTable;
using sparsebert::GemmFn;
using sparsebert::PairedView;
using sparsebert::SpmmFn;

namespace {

const Activation kActivations[] = {Activation::kNone, Activation::kGelu, Activation::kGeluTanh, Activation::kRelu,
                                   Activation::kTanh};
const char* const kActivationNames[] = {"none", "gelu", "gelu_tanh", "relu", "tanh"};

// 2 B, B the bound on |fp32 act(sum) + residual - exact| of one output (tests/kernel_checks.py epilogue_bound):
// mag = the terms' total magnitude, `roundings` the rounded steps of the sum, pre its exact value.
double linear_tol(double mag, int64_t roundings, double pre, Activation act, double res) {
  const bool smooth = act == Activation::kGelu || act == Activation::kGeluTanh || act == Activation::kTanh;
  double b = (act == Activation::kGelu || act == Activation::kGeluTanh ? 1.13 : 1.0) * oracle::gamma(roundings) * mag;
  b += smooth ? oracle::kActUlps * kU * std::max(1.0, std::fabs(pre)) : 2 * kU * std::fabs(pre);
  b += 2 * kU * (std::fabs(pre) + std::fabs(res) + b);
  return 2 * b + oracle::kFloor;
}

// ---- sparse products: a dense W[m][K] with zeros, packed as row pairs (kernels.h PairedView) ----

struct Paired {
  std::vector<int32_t> ptr{0}, rows;
  std::vector<uint16_t> idx;
  std::vector<float> val;
  PairedView view() const { return {ptr.data(), rows.data(), idx.data(), val.data()}; }
};

Paired pack_pairs(const std::vector<float>& w, int32_t m, int32_t k, int width) {
  Paired p;
  const int32_t blocks = (k + width - 1) / width;
  auto weight = [&](int32_t r, int32_t kb, int q) { return kb * width + q < k ? w[r * k + kb * width + q] : 0.0f; };
  auto nonzero_blocks = [&](int32_t r) {
    std::vector<int32_t> out;
    for (int32_t kb = 0; r >= 0 && kb < blocks; ++kb)
      for (int q = 0; q < width; ++q)
        if (weight(r, kb, q) != 0.0f) { out.push_back(kb); break; }
    return out;
  };
  for (int32_t r0 = 0; r0 < m; r0 += 2) {
    const int32_t r1 = r0 + 1 < m ? r0 + 1 : -1;
    const auto e0 = nonzero_blocks(r0), e1 = nonzero_blocks(r1);
    const size_t len = std::max(e0.size(), e1.size());  // the shorter row padded with zero weights
    for (size_t j = 0; j < len; ++j) {
      const int32_t kb0 = j < e0.size() ? e0[j] : 0, kb1 = j < e1.size() ? e1[j] : 0;
      p.idx.push_back(static_cast<uint16_t>(kb0));
      p.idx.push_back(static_cast<uint16_t>(kb1));
      for (int q = 0; q < width; ++q) p.val.push_back(j < e0.size() ? weight(r0, kb0, q) : 0.0f);
      for (int q = 0; q < width; ++q) p.val.push_back(j < e1.size() ? weight(r1, kb1, q) : 0.0f);
    }
    p.rows.push_back(r0);
    p.rows.push_back(r1);
    p.ptr.push_back(static_cast<int32_t>(p.idx.size() / 2));
  }
  p.val.resize(p.val.size() + 1);  // never empty: data() of an empty vector may be null
  p.idx.resize(p.idx.size() + 2);
  return p;
}

}  // namespace

void check_spmm(Report& rep, const KernelTable& kt, const KernelTable& ref, int width, Rng& rng) {
  const SpmmFn got_fn = width == 1 ? kt.spmm_csr : kt.spmm_block4, ref_fn = width == 1 ? ref.spmm_csr : ref.spmm_block4;
  const char* name = width == 1 ? "spmm_csr" : "spmm_block4";
  for (int32_t m : {1, 5, 8}) for (int32_t k : {1, 3, 6, 37}) for (int32_t n : kTokenCounts)
  for (int flags = 0; flags < 8; ++flags) {
    const bool bias = flags & 1, residual = flags & 2, accumulate = flags & 4;
    std::vector<float> w(m * k);
    for (int32_t r = 0; r < m; ++r)  // every third row has no nonzeros (rows 1, 4, 7: alone and in a pair)
      for (int32_t c = 0; c < k; ++c) w[r * k + c] = (r % 3 != 1 && rng.chance(0.4)) ? rng.uniform(-1, 1) : 0.0f;
    const Paired p = pack_pairs(w, m, k, width);
    Tokens x(static_cast<int32_t>(oracle::round_up(k, 4)), n), res(m, n), got(m, n);
    for (int32_t c = 0; c < k; ++c)  // rows k .. round_up(k, 4) stay zero, as the contract asks
      for (int32_t t = 0; t < n; ++t) x.at(c, t) = rng.uniform(-2, 2);
    res.fill(rng, -3, 3);
    got.fill(rng, -3, 3);
    const std::vector<float> b = rng.uniforms(m, -1, 1);
    Epilogue ep;
    ep.bias = bias ? b.data() : nullptr;
    ep.residual = residual ? res.v.data() : nullptr;
    ep.ldr = res.ld;
    ep.accumulate = accumulate;
    const Tokens start = got;
    Tokens want = got;
    const int32_t pairs = static_cast<int32_t>(p.rows.size() / 2);
    got_fn(p.view(), 0, pairs, x.v.data(), x.ld, got.v.data(), got.ld, n, ep);
    ref_fn(p.view(), 0, pairs, x.v.data(), x.ld, want.v.data(), want.ld, n, ep);
    oracle::compare(rep, label(kt.isa, name, "m %d k %d n %d bias %d residual %d accumulate %d", m, k, n, bias,
                               residual, accumulate), got, want, [&](int32_t r, int32_t t) {
      // Starting value: Y's partial sum when accumulating, else bias + residual; then k products.
      double pre = accumulate ? start.at(r, t) : (bias ? b[r] : 0.0) + (residual ? res.at(r, t) : 0.0);
      double mag = accumulate ? std::fabs(pre)
                              : (bias ? std::fabs(b[r]) : 0.0) + (residual ? std::fabs(res.at(r, t)) : 0.0);
      for (int32_t c = 0; c < k; ++c) {
        pre += double(w[r * k + c]) * x.at(c, t);
        mag += std::fabs(double(w[r * k + c]) * x.at(c, t));
      }
      return linear_tol(mag, k + 3, pre, Activation::kNone, 0.0);
    });
  }
}

// ---- the epilogue pass ----

void check_finish_rows(Report& rep, const KernelTable& kt, const KernelTable& ref, Rng& rng) {
  for (int32_t n : kTokenCounts) for (int a = 0; a < 5; ++a) for (int flags = 0; flags < 4; ++flags) {
    const bool bias = flags & 1, residual = flags & 2;
    const int32_t m = 6;
    const int32_t rows[] = {4, -1, 0, 2, 5};  // row 1 and 3 not listed: left alone; -1 skipped
    Tokens y(m, n), res(m, n);
    y.fill(rng, -6, 6);
    res.fill(rng, -3, 3);
    const std::vector<float> b = rng.uniforms(m, -1, 1);
    Epilogue ep;
    ep.bias = bias ? b.data() : nullptr;
    ep.act = kActivations[a];
    ep.residual = residual ? res.v.data() : nullptr;
    ep.ldr = res.ld;
    Tokens got = y, want = y;
    kt.finish_rows(rows, 5, got.v.data(), got.ld, n, ep);
    ref.finish_rows(rows, 5, want.v.data(), want.ld, n, ep);
    oracle::compare(rep, label(kt.isa, "finish_rows", "n %d act %s bias %d residual %d", n, kActivationNames[a],
                               bias, residual), got, want, [&](int32_t r, int32_t t) {
      const double pre = double(y.at(r, t)) + (bias ? b[r] : 0.0);
      const double mag = std::fabs(y.at(r, t)) + (bias ? std::fabs(b[r]) : 0.0);
      return r == 1 || r == 3 ? 0.0 : linear_tol(mag, 1, pre, ep.act, residual ? res.at(r, t) : 0.0);
    });
  }
}

// ---- dense products ----

void check_gemm(Report& rep, const KernelTable& kt, const KernelTable& ref, bool transposed, Rng& rng) {
  const GemmFn got_fn = transposed ? kt.gemm_wt : kt.gemm, ref_fn = transposed ? ref.gemm_wt : ref.gemm;
  const char* name = transposed ? "gemm_wt" : "gemm";
  for (int32_t m : {1, 5, 7, 13}) for (int32_t k : {1, 3, 17}) for (int32_t n : kTokenCounts)
  for (int a = 0; a < 5; ++a) for (int flags = 0; flags < 4; ++flags) {
    const bool residual = flags & 1, accumulate = flags & 2;
    const int64_t ldw = transposed ? m + 2 : k + 3;  // strides wider than the matrix
    const std::vector<float> w = rng.uniforms(static_cast<int32_t>((transposed ? k : m) * ldw), -1, 1);
    const std::vector<float> b = rng.uniforms(m, -1, 1);
    auto weight = [&](int32_t r, int32_t c) { return double(transposed ? w[c * ldw + r] : w[r * ldw + c]); };
    Tokens x(k, n), res(m, n), y(m, n);
    x.fill(rng, -2, 2);
    res.fill(rng, -3, 3);
    y.fill(rng, -3, 3);
    Epilogue ep;
    ep.bias = b.data();
    ep.act = kActivations[a];
    ep.residual = residual ? res.v.data() : nullptr;
    ep.ldr = res.ld;
    ep.accumulate = accumulate;
    Tokens got = y, want = y;
    got_fn(m, n, k, w.data(), ldw, x.v.data(), x.ld, got.v.data(), got.ld, ep);
    ref_fn(m, n, k, w.data(), ldw, x.v.data(), x.ld, want.v.data(), want.ld, ep);
    oracle::compare(rep, label(kt.isa, name, "m %d k %d n %d act %s residual %d accumulate %d", m, k, n,
                               kActivationNames[a], residual, accumulate), got, want, [&](int32_t r, int32_t t) {
      // Accumulating: Y += W X and nothing else. Otherwise act(W X + bias) + residual.
      double pre = accumulate ? y.at(r, t) : b[r], mag = std::fabs(pre);
      for (int32_t c = 0; c < k; ++c) {
        pre += weight(r, c) * x.at(c, t);
        mag += std::fabs(weight(r, c) * x.at(c, t));
      }
      if (accumulate) return linear_tol(mag, k + 2, pre, Activation::kNone, 0.0);
      return linear_tol(mag, k + 3, pre, ep.act, residual ? res.at(r, t) : 0.0);
    });
  }
}

}  // namespace oracle
