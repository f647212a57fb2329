// What the kernel oracle's cases share: seeded data, padded token-vector buffers with a guard zone, the error
// bounds (derived from fp32 arithmetic as in tests/kernel_checks.py) and the comparison that reports a mismatch.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/kernels.h"

namespace oracle {

constexpr double kU = 1.0 / (1 << 24);  // unit roundoff of float32
constexpr double kActUlps = 16;         // the SIMD activations' own error, in u * max(1, |x|) (tests/conftest.py)
constexpr double kExpRel = 4 * kU;      // vexp: ~2 ulp
constexpr double kFloor = 4 * 1.1754943508222875e-38;  // SIMD code may flush denormals
constexpr int kPad = 16;                // a kernel may touch round_up(n, 16) lanes of a row (kernels.h)
constexpr float kGuard = -7.25e30f;     // fills the lanes past that: a kernel writing there is caught
// Token counts around the vector widths (4, 8, 16 lanes) and the tiles (32, 64 tokens).
constexpr int32_t kTokenCounts[] = {1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 129};

inline double gamma(double n) { return n * kU / (1 - n * kU); }
inline int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

struct Rng {
  std::mt19937 gen;
  explicit Rng(uint32_t seed) : gen(seed) {}
  float uniform(float lo, float hi) { return std::uniform_real_distribution<float>(lo, hi)(gen); }
  std::vector<float> uniforms(int32_t count, float lo, float hi) {  // e.g. a bias: one value per row
    std::vector<float> v(count);
    for (float& x : v) x = uniform(lo, hi);
    return v;
  }
  bool chance(double p) { return std::bernoulli_distribution(p)(gen); }
  int32_t integer(int32_t lo, int32_t hi) { return std::uniform_int_distribution<int32_t>(lo, hi)(gen); }
};

// rows x n token vectors, ld = round_up(n, 16) + 16: the lanes past round_up(n, 16) hold kGuard.
struct Tokens {
  int32_t rows = 0, n = 0;
  int64_t ld = 0;
  std::vector<float> v;
  Tokens(int32_t rows_, int32_t n_) : rows(rows_), n(n_), ld(round_up(n_, kPad) + kPad), v(rows_ * ld, 0.0f) {
    for (int32_t r = 0; r < rows; ++r)
      for (int64_t t = round_up(n, kPad); t < ld; ++t) v[r * ld + t] = kGuard;
  }
  float* row(int32_t r) { return v.data() + r * ld; }
  const float* row(int32_t r) const { return v.data() + r * ld; }
  float& at(int32_t r, int32_t t) { return v[r * ld + t]; }
  float at(int32_t r, int32_t t) const { return v[r * ld + t]; }
  void fill(Rng& rng, float lo, float hi) {
    for (int32_t r = 0; r < rows; ++r)
      for (int32_t t = 0; t < n; ++t) at(r, t) = rng.uniform(lo, hi);
  }
};

// Counts the checks and the failures; prints the first few failures of each case.
struct Report {
  long checks = 0, failures = 0;
  bool fail(const std::string& what, const char* message) {
    if (++failures <= 20) std::fprintf(stderr, "MISMATCH %s: %s\n", what.c_str(), message);
    return false;
  }
};

// got (the ISA's kernel) against want (the scalar table) element by element: |got - want| <= tol(r, t), both
// results computed from the same inputs. Each is within the bound B of the exact value, so tol is 2 B. Also checks
// that the guard lanes are untouched.
template <class Tol>
bool compare(Report& rep, const std::string& what, const Tokens& got, const Tokens& want, Tol&& tol) {
  ++rep.checks;
  for (int32_t r = 0; r < got.rows; ++r) {
    for (int32_t t = 0; t < got.n; ++t) {
      const double g = got.at(r, t), w = want.at(r, t), bound = tol(r, t);
      if (!(std::fabs(g - w) <= bound) || !std::isfinite(bound)) {
        char msg[256];
        std::snprintf(msg, sizeof msg, "row %d token %d: got %.9g, scalar %.9g, |diff| %.3g > bound %.3g", r, t, g,
                      w, std::fabs(g - w), bound);
        return rep.fail(what, msg);
      }
    }
    for (int64_t t = round_up(got.n, kPad); t < got.ld; ++t)
      if (got.at(r, static_cast<int32_t>(t)) != kGuard) {
        char msg[128];
        std::snprintf(msg, sizeof msg, "row %d: wrote lane %lld, past round_up(n, 16)", r, static_cast<long long>(t));
        return rep.fail(what, msg);
      }
  }
  return true;
}

inline std::string label(const char* isa, const char* kernel, const char* fmt, ...)
    __attribute__((format(printf, 3, 4)));
inline std::string label(const char* isa, const char* kernel, const char* fmt, ...) {
  char buf[200];
  va_list args;
  va_start(args, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, args);
  va_end(args);
  return std::string(isa) + " " + kernel + " " + buf;
}

inline bool same_bits(Report& rep, const std::string& what, const void* got, const void* want, size_t bytes) {
  ++rep.checks;
  if (std::memcmp(got, want, bytes) == 0) return true;
  return rep.fail(what, "differs bitwise from the scalar kernel");
}

// The cases, one function per kernel family (oracle_linear.cc, oracle_norm_int8.cc, oracle_quantize.cc): each
// runs the ISA table kt and the scalar table on the same inputs and records its checks in rep.
void check_spmm(Report& rep, const sparsebert::KernelTable& kt, const sparsebert::KernelTable& ref, int width,
                Rng& rng);
void check_finish_rows(Report& rep, const sparsebert::KernelTable& kt, const sparsebert::KernelTable& ref, Rng& rng);
void check_gemm(Report& rep, const sparsebert::KernelTable& kt, const sparsebert::KernelTable& ref, bool transposed,
                Rng& rng);
void check_layer_norm(Report& rep, const sparsebert::KernelTable& kt, const sparsebert::KernelTable& ref, Rng& rng);
void check_softmax(Report& rep, const sparsebert::KernelTable& kt, const sparsebert::KernelTable& ref, Rng& rng);
void check_int8(Report& rep, const sparsebert::KernelTable& kt, const sparsebert::KernelTable& ref, Rng& rng);
void check_quantize_specials(Report& rep, const sparsebert::KernelTable& kt,
                             const sparsebert::KernelTable& ref);
void check_fma_peak(Report& rep, const sparsebert::KernelTable& kt);

}  // namespace oracle
