// The kernel oracle's other cases (see kernel_oracle.cc): LayerNorm and the column softmax within 2 B of the
// scalar table's outputs (B the bounds of tests/kernel_cases_norm.py), the int8 entries bitwise, fma_peak's count.
#include "oracle_check.h"

namespace oracle {

using sparsebert::Activation;
using sparsebert::Epilogue;
using sparsebert::KernelTable;
using sparsebert::Int8View;

// ---- LayerNorm and softmax ----

void check_layer_norm(Report& rep, const KernelTable& kt, const KernelTable& ref, Rng& rng) {
  for (int32_t f : {1, 7, 40, 768}) for (int32_t n : kTokenCounts) {
    Tokens x(f, n);
    for (int32_t t = 0; t < n; ++t) {  // columns of different scales and offsets
      const float scale = rng.uniform(0.1f, 10), shift = rng.uniform(-3, 3);
      for (int32_t i = 0; i < f; ++i) x.at(i, t) = shift + scale * rng.uniform(-1.7f, 1.7f);
    }
    const std::vector<float> g = rng.uniforms(f, 0.6f, 1.4f), beta = rng.uniforms(f, -0.5f, 0.5f);
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
      for (int32_t j = 0; j < m; ++j) {
        if (!keep[j]) continue;
        sum[t] += std::exp(logit(j, t) - mx[t]);
        dmax[t] = std::max(dmax[t], delta(j, t));
      }
    }
    oracle::compare(rep, label(kt.isa, "softmax_cols", "m %d n %d masked %d", m, n, masked), got, want,
                    [&](int32_t j, int32_t t) {
      if (!keep[j]) return 0.0;  // masked rows: exactly 0 in both
      const double p = std::exp(logit(j, t) - mx[t]) / sum[t], g = oracle::gamma(kept + 2);
      if (logit(j, t) - mx[t] < -69) return std::exp(-69.0) * 1.001;  // the SIMD softmax floors there
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

}  // namespace oracle
