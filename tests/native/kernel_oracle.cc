// The kernel oracle: every fp32 entry of every ISA table this CPU runs, against the scalar table, at the edge cases
// (token counts around the vector and tile widths, K not a multiple of 4, rows without nonzeros, a pair holding
// one row, every activation, accumulate on and off, bias and residual); the int8 entries bitwise. A C++ program so
// that it runs where Python does not: tools/test_aarch64.sh cross-builds it and runs it under qemu-aarch64 (the
// NEON kernels); natively it cross-checks the x86 ones. Exits 1 with the first mismatches on stderr.
//
// SPARSEBERT_ISA set: only that ISA is tested, and default_isa() must name it (the variable works as in Python).
#include <cstdarg>
#include <cstdlib>
#include <stdexcept>

#include "kernels/cpu_features.h"
#include "kernels/dispatch.h"
#include "kernels/isa.h"
#include "oracle_check.h"

namespace sparsebert {
namespace {

using oracle::Report;
using oracle::Rng;
using oracle::Tokens;
using oracle::kU;

const int32_t kTokenCounts[] = {1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 129};
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

std::string label(const char* isa, const char* kernel, const char* fmt, ...) __attribute__((format(printf, 3, 4)));
std::string label(const char* isa, const char* kernel, const char* fmt, ...) {
  char buf[200];
  va_list args;
  va_start(args, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, args);
  va_end(args);
  return std::string(isa) + " " + kernel + " " + buf;
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

void check_spmm(Report& rep, const KernelTable& kt, const KernelTable& ref, int width, Rng& rng) {
  const SpmmFn got_fn = width == 1 ? kt.spmm_csr : kt.spmm_block4, ref_fn = width == 1 ? ref.spmm_csr : ref.spmm_block4;
  const char* name = width == 1 ? "spmm_csr" : "spmm_block4";
  for (int32_t m : {1, 5, 8}) for (int32_t k : {1, 3, 6, 37}) for (int32_t n : kTokenCounts) for (int flags = 0; flags < 8; ++flags) {
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
    std::vector<float> b(m);
    for (float& v : b) v = rng.uniform(-1, 1);
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
      double mag = accumulate ? std::fabs(pre) : (bias ? std::fabs(b[r]) : 0.0) + (residual ? std::fabs(res.at(r, t)) : 0.0);
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
    std::vector<float> b(m);
    for (float& v : b) v = rng.uniform(-1, 1);
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
    std::vector<float> w((transposed ? k : m) * ldw), b(m);
    for (float& v : w) v = rng.uniform(-1, 1);
    for (float& v : b) v = rng.uniform(-1, 1);
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

// ---- LayerNorm and softmax ----

void check_layer_norm(Report& rep, const KernelTable& kt, const KernelTable& ref, Rng& rng) {
  for (int32_t f : {1, 7, 40, 768}) for (int32_t n : kTokenCounts) {
    Tokens x(f, n);
    for (int32_t t = 0; t < n; ++t) {  // columns of different scales and offsets
      const float scale = rng.uniform(0.1f, 10), shift = rng.uniform(-3, 3);
      for (int32_t i = 0; i < f; ++i) x.at(i, t) = shift + scale * rng.uniform(-1.7f, 1.7f);
    }
    std::vector<float> g(f), beta(f);
    for (float& v : g) v = rng.uniform(0.6f, 1.4f);
    for (float& v : beta) v = rng.uniform(-0.5f, 0.5f);
    const float eps = 1e-12f;
    Tokens got(f, n), want(f, n);
    kt.layer_norm(f, n, x.v.data(), x.ld, got.v.data(), got.ld, g.data(), beta.data(), eps);
    ref.layer_norm(f, n, x.v.data(), x.ld, want.v.data(), want.ld, g.data(), beta.data(), eps);
    // tests/kernel_cases_norm.py layer_norm_bound (first-order propagation of the mean's, the variance's and the
    // reciprocal square root's roundings), per column.
    std::vector<double> mean(n), s(n), dm(n), rho(n);
    for (int32_t t = 0; t < n; ++t) {
      double sum = 0, asum = 0, sq = 0;
      for (int32_t i = 0; i < f; ++i) sum += x.at(i, t), asum += std::fabs(x.at(i, t));
      mean[t] = sum / f;
      for (int32_t i = 0; i < f; ++i) sq += (x.at(i, t) - mean[t]) * (x.at(i, t) - mean[t]);
      const double var = sq / f;
      s[t] = std::sqrt(var + double(eps));
      dm[t] = f == 1 ? 0.0 : oracle::gamma(f + 1) * asum / f;  // one feature: the mean is x itself, exactly
      const double squares = sq + f * dm[t] * dm[t];
      const double dq = f * dm[t] * dm[t] + (2 * kU + kU * kU) * squares + oracle::gamma(f) * squares * (1 + 3 * kU);
      const double dv = dq / f * (1 + 3 * kU) + 3 * kU * var + kU * double(eps);
      rho[t] = 0.5 * dv / (var + double(eps) - dv) + 2 * kU;
    }
    oracle::compare(rep, label(kt.isa, "layer_norm", "features %d n %d", f, n), got, want, [&](int32_t i, int32_t t) {
      const double d = x.at(i, t) - mean[t], z = d / s[t];
      const double dd = dm[t] + kU * (std::fabs(d) + dm[t]);
      double tol = std::fabs(g[i]) * ((1 + rho[t]) * dd / s[t] + std::fabs(z) * (rho[t] + 2 * kU));
      tol = (tol + kU * std::fabs(z * g[i] + beta[i])) * (1 + 4 * kU);
      return 2 * tol + oracle::kFloor;
    });
  }
}

void check_softmax(Report& rep, const KernelTable& kt, const KernelTable& ref, Rng& rng) {
  for (int32_t m : {1, 3, 20, 130}) for (int32_t n : kTokenCounts) for (int masked = 0; masked < 2; ++masked) {
    std::vector<uint8_t> keep(m, 1);
    if (masked)  // every third row masked out, but at least one kept
      for (int32_t j = 1; j < m; j += 3) keep[j] = 0;
    const float scale = 0.125f;
    Tokens s(m, n);
    s.fill(rng, -40, 40);
    Tokens got = s, want = s;
    kt.softmax_cols(m, n, got.v.data(), got.ld, scale, keep.data());
    ref.softmax_cols(m, n, want.v.data(), want.ld, scale, keep.data());
    // tests/kernel_cases_norm.py softmax_bound: each logit's error (the product's rounding, u |z|, exp's) moves
    // p_i by a factor within exp(+-(delta_i + max delta)); the sum, reciprocal and product add roundings.
    std::vector<double> mx(n, -INFINITY), sum(n, 0.0), dmax(n, 0.0);
    auto logit = [&](int32_t j, int32_t t) { return double(s.at(j, t)) * double(scale); };
    auto delta = [&](int32_t j, int32_t t) {
      const double z = double(s.at(j, t) * scale) - mx[t];
      return std::fabs(double(s.at(j, t) * scale) - logit(j, t)) + kU * std::fabs(z) + oracle::kExpRel;
    };
    int32_t kept = 0;
    for (int32_t j = 0; j < m; ++j) kept += keep[j];
    for (int32_t t = 0; t < n; ++t) {
      for (int32_t j = 0; j < m; ++j) if (keep[j]) mx[t] = std::max(mx[t], logit(j, t));
      for (int32_t j = 0; j < m; ++j) if (keep[j]) sum[t] += std::exp(logit(j, t) - mx[t]), dmax[t] = std::max(dmax[t], delta(j, t));
    }
    oracle::compare(rep, label(kt.isa, "softmax_cols", "m %d n %d masked %d", m, n, masked), got, want,
                    [&](int32_t j, int32_t t) {
      if (!keep[j]) return 0.0;  // masked rows: exactly 0 in both
      const double p = std::exp(logit(j, t) - mx[t]) / sum[t], g = oracle::gamma(kept + 2);
      if (logit(j, t) - mx[t] < -87) return 2 * oracle::kFloor;  // below vexp's clamp
      return 2 * (p * (std::expm1(delta(j, t) + dmax[t]) * (1 + g) + g)) + oracle::kFloor;
    });
  }
}

// ---- int8: bitwise ----

void check_int8(Report& rep, const KernelTable& kt, const KernelTable& ref, Rng& rng) {
  // Weights over the whole s8 range, but within [-64, 64] for a table that needs bounded byte pairs (kernels.h).
  const int32_t w_lo = kt.int8_bounded_pairs ? -64 : -128, w_hi = kt.int8_bounded_pairs ? 64 : 127;
  for (int32_t k : {1, 5, 8, 37, 515}) for (int32_t n : kTokenCounts) {
    const int32_t kb = (k + 3) / 4, m = 7;
    const int64_t ldq = oracle::round_up(n, oracle::kPad);
    Tokens x(k, n);
    x.fill(rng, -2, 3);
    std::vector<uint8_t> got_q(kb * ldq * 4), want_q(kb * ldq * 4);
    std::vector<float> got_s(ldq), want_s(ldq);
    std::vector<int32_t> got_z(ldq), want_z(ldq);
    kt.quantize(k, n, x.v.data(), x.ld, got_q.data(), ldq, got_s.data(), got_z.data());
    ref.quantize(k, n, x.v.data(), x.ld, want_q.data(), ldq, want_s.data(), want_z.data());
    const std::string what = label(kt.isa, "quantize", "k %d n %d", k, n);
    bool same = true;
    for (int32_t b = 0; b < kb && same; ++b)
      same = oracle::same_bits(rep, what + " (codes)", &got_q[b * ldq * 4], &want_q[b * ldq * 4], n * 4);
    if (!same || !oracle::same_bits(rep, what + " (scales)", got_s.data(), want_s.data(), n * 4) ||
        !oracle::same_bits(rep, what + " (zero points)", got_z.data(), want_z.data(), n * 4))
      continue;
    std::vector<int32_t> ptr{0}, val, w_sum(m);
    std::vector<uint16_t> col;
    std::vector<float> w_scale(m), b(m);
    for (int32_t r = 0; r < m; ++r) {
      for (int32_t j = 0; j < kb; ++j) {
        if (r == 2 || !rng.chance(0.5)) continue;  // row 2: no blocks
        uint32_t word = 0;
        for (int q = 0; q < 4; ++q) {
          const int32_t v = 4 * j + q < k ? rng.integer(w_lo, w_hi) : 0;
          w_sum[r] += v;
          word |= static_cast<uint32_t>(static_cast<uint8_t>(static_cast<int8_t>(v))) << (8 * q);
        }
        col.push_back(static_cast<uint16_t>(j));
        val.push_back(static_cast<int32_t>(word));
      }
      ptr.push_back(static_cast<int32_t>(col.size()));
      w_scale[r] = rng.uniform(0.001f, 0.02f);
      b[r] = rng.uniform(-1, 1);
    }
    col.push_back(0), val.push_back(0);  // never empty
    const Int8View view{ptr.data(), col.data(), val.data(), w_scale.data(), w_sum.data()};
    Tokens res(m, n), got(m, n), want(m, n);
    res.fill(rng, -1, 1);
    Epilogue ep;
    ep.bias = b.data();
    ep.residual = res.v.data();
    ep.ldr = res.ld;
    kt.spmm_block4_i8(view, 0, m, got_q.data(), ldq, got_s.data(), got_z.data(), got.v.data(), got.ld, n, ep);
    ref.spmm_block4_i8(view, 0, m, got_q.data(), ldq, got_s.data(), got_z.data(), want.v.data(), want.ld, n, ep);
    for (int32_t r = 0; r < m; ++r)
      if (!oracle::same_bits(rep, label(kt.isa, "spmm_block4_i8", "k %d n %d row %d", k, n, r), got.row(r),
                             want.row(r), n * 4)) break;
  }
}

void check_fma_peak(Report& rep, const KernelTable& kt) {
  float sink[16];
  const double flops = kt.fma_peak(1000, sink);
  ++rep.checks;
  // 2 flops x 12 accumulators x the vector's lanes (1, 4, 8 or 16) per iteration.
  const double lanes = flops / (2.0 * 12 * 1000);
  if (!(lanes == 1 || lanes == 4 || lanes == 8 || lanes == 16) || !std::isfinite(sink[0]))
    rep.fail(std::string(kt.isa) + " fma_peak", "counts no whole vector of FMAs per step");
}

}  // namespace
}  // namespace sparsebert

int main() {
  using namespace sparsebert;
  const char* forced = std::getenv("SPARSEBERT_ISA");
  std::vector<std::string> isas;
  try {
    if (forced && *forced) {
      if (default_isa() != forced) {
        std::fprintf(stderr, "kernel_oracle: SPARSEBERT_ISA=%s but default_isa() is %s\n", forced,
                     default_isa().c_str());
        return 1;
      }
      isas = {forced};
    } else {
      isas = available_isas();
    }
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "kernel_oracle: %s\n", e.what());
    return 1;
  }
  std::string flags;
  for (const std::string& f : cpu_features().flags()) flags += " " + f;
  std::printf("kernel_oracle: CPU features:%s\n", flags.empty() ? " (none detected)" : flags.c_str());
  const KernelTable ref = ref::table();
  Report rep;
  for (const std::string& isa : isas) {
    const KernelTable& kt = kernels_for(isa);
    const long before = rep.checks, failed = rep.failures;
    oracle::Rng rng(17);
    check_spmm(rep, kt, ref, 1, rng);
    check_spmm(rep, kt, ref, 4, rng);
    check_finish_rows(rep, kt, ref, rng);
    check_gemm(rep, kt, ref, false, rng);
    check_gemm(rep, kt, ref, true, rng);
    check_layer_norm(rep, kt, ref, rng);
    check_softmax(rep, kt, ref, rng);
    check_int8(rep, kt, ref, rng);
    check_fma_peak(rep, kt);
    std::printf("kernel_oracle: %s (int8: %s): %ld checks, %ld mismatches\n", isa.c_str(), kt.int8_isa,
                rep.checks - before, rep.failures - failed);
  }
  if (rep.failures) {
    std::fprintf(stderr, "kernel_oracle: FAILED, %ld mismatches\n", rep.failures);
    return 1;
  }
  std::printf("kernel_oracle: all %ld checks passed on %zu ISA(s)\n", rep.checks, isas.size());
  return 0;
}
