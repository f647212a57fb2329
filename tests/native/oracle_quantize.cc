// The kernel oracle's quantizer edge cases (see kernel_oracle.cc), bitwise against the scalar table: tokens whose
// range is empty, overflows float32 or holds NaN and infinities, negative zeros, and values that land exactly
// halfway between two codes (ties go to even), each special token at several vector lanes.
#include <limits>

#include "oracle_check.h"

namespace oracle {

using sparsebert::KernelTable;

namespace {

constexpr int32_t kFeatures = 9;  // not a multiple of 4: the last block's padding bytes hold the zero point
constexpr float kNan = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

// One token's features per special case (the test_int8_kernels.py cases, and the ties).
const float kSpecial[][kFeatures] = {
    {0, 0, 0, 0, 0, 0, 0, 0, 0},                           // all zero: scale 1, zero point 0
    {3.5f, 3.5f, 3.5f, 3.5f, 3.5f, 3.5f, 3.5f, 3.5f, 3.5f},  // constant
    {1e-38f, -1e-38f, 0, 0, 0, 0, 0, 0, 1e-45f},           // tiny, a denormal
    {3e38f, -3e38f, 1, 0, 0, 0, 0, 0, 0},                  // the range overflows: scale inf -> 1
    {kNan, 1, 2, 3, 4, 5, 6, 7, 8},                        // NaN: skipped by min/max, code 0
    {kInf, -1, 0, 0, 0, 0, 0, 0, 0},
    {-kInf, 1, 0, 0, 0, 0, 0, 0, 0},
    {kNan, kNan, kNan, kNan, kNan, kNan, kNan, kNan, kNan},
    {-0.0f, -0.0f, -0.0f, -0.0f, -0.0f, -0.0f, -0.0f, -0.0f, -0.0f},
    {-1, -2, -3, -0.5f, -7, -0.25f, -1, -4, -2},           // all negative: zero point 255
    {255, 0.5f, 1.5f, 2.5f, 3.5f, -0.0f, 254.5f, 100.5f, 7},  // scale 1: x.5 ties to even
    {-255, -0.5f, -1.5f, -2.5f, -3.5f, 0, -254.5f, -100.5f, -7},
};
constexpr int32_t kCases = sizeof(kSpecial) / sizeof(kSpecial[0]);

}  // namespace

void check_quantize_specials(Report& rep, const KernelTable& kt, const KernelTable& ref) {
  for (int32_t n : {kCases, 37}) {  // every case once, then at other lanes (token t holds case t % kCases)
    const int32_t kb = (kFeatures + 3) / 4;
    const int64_t ldq = round_up(n, kPad);
    Tokens x(kFeatures, n);
    for (int32_t t = 0; t < n; ++t)
      for (int32_t f = 0; f < kFeatures; ++f) x.at(f, t) = kSpecial[t % kCases][f];
    std::vector<uint8_t> got_q(kb * ldq * 4), want_q(kb * ldq * 4);
    std::vector<float> got_s(ldq), want_s(ldq);
    std::vector<int32_t> got_z(ldq), want_z(ldq);
    kt.quantize(kFeatures, n, x.v.data(), x.ld, got_q.data(), ldq, got_s.data(), got_z.data());
    ref.quantize(kFeatures, n, x.v.data(), x.ld, want_q.data(), ldq, want_s.data(), want_z.data());
    const std::string what = label(kt.isa, "quantize", "special tokens, n %d", n);
    for (int32_t b = 0; b < kb; ++b)
      same_bits(rep, what + " (codes)", &got_q[b * ldq * 4], &want_q[b * ldq * 4], n * 4);
    same_bits(rep, what + " (scales)", got_s.data(), want_s.data(), n * 4);
    same_bits(rep, what + " (zero points)", got_z.data(), want_z.data(), n * 4);
  }
}

}  // namespace oracle
