// The FMA peak loop, written once over an ISA's `Simd` primitives: 12 independent accumulators cover a 4-cycle
// FMA latency on two FMA ports with room to spare.
template <class S>
inline double fma_peak_impl(int64_t iterations, float* sink) {
  using V = typename S::V;
  constexpr int kAcc = 12;
  V acc[kAcc];
  for (int i = 0; i < kAcc; ++i) acc[i] = S::set1(0.001f * static_cast<float>(i));
  const V a = S::set1(0.999f), b = S::set1(0.0001f);
  for (int64_t it = 0; it < iterations; ++it)
    for (int i = 0; i < kAcc; ++i) acc[i] = S::fmadd(acc[i], a, b);
  V total = acc[0];
  for (int i = 1; i < kAcc; ++i) total = S::add(total, acc[i]);
  S::store(sink, total);
  return 2.0 * kAcc * S::kLanes * static_cast<double>(iterations);
}
