// Vector exp, tanh and the activations, written once over the primitives of an ISA's `Simd` struct.
// Accuracy (checked against float64 in the tests): exp ~2 ulp on [-87, 88]; erf within 3.4e-7 absolute (so GELU
// within 1.7e-7 |x|); tanh within ~1e-7 absolute.
// Only correctly rounded operations (add, mul, fma, division), in the same order on every ISA, so every SIMD path
// computes bitwise the same values. A reciprocal estimate would not: rcp14, rcpps and vrecpe differ in their
// bits even after Newton steps, and one last bit of a GELU can move an int8 model's activation to the next
// quantization code. Division costs no more here (a GELU on AVX-512 is bound by its ~20 other operations).

template <class S>
inline typename S::V vexp(typename S::V x) {
  using V = typename S::V;
  // Clamped so that 2^n stays a normal float; e^-87 ~ 1.6e-38 stands in for smaller values, which is far below
  // anything the softmax or the erfc tail can resolve.
  x = S::min(S::max(x, S::set1(-87.0f)), S::set1(88.0f));
  const V n = S::round(S::mul(x, S::set1(1.44269504088896341f)));
  V r = S::fnmadd(n, S::set1(0.693359375f), x);       // ln 2, high part (exact in float)
  r = S::fnmadd(n, S::set1(-2.12194440e-4f), r);      // ln 2, low part
  // Polynomial for e^r on [-ln2/2, ln2/2] (Cephes expf coefficients).
  V p = S::set1(1.9875691500e-4f);
  p = S::fmadd(p, r, S::set1(1.3981999507e-3f));
  p = S::fmadd(p, r, S::set1(8.3334519073e-3f));
  p = S::fmadd(p, r, S::set1(4.1665795894e-2f));
  p = S::fmadd(p, r, S::set1(1.6666665459e-1f));
  p = S::fmadd(p, r, S::set1(5.0000001201e-1f));
  p = S::fmadd(p, S::mul(r, r), r);
  p = S::add(p, S::set1(1.0f));
  return S::ldexp(p, n);
}

// GELU (erf form): 0.5 x (1 + erf(x / sqrt 2)), with erf(z) ~ z P(z^2) / Q(z^2) on |z| <= 4 (erf(4) rounds to 1 in
// float). P and Q (degree 5 each) were fitted for this file by tools/fit_erf.py (rational least squares with Loeb
// reweighting); evaluated in float they stay within 3.4e-7 of erf. Cheaper and with a shorter dependency chain
// than an erfc built on exp(), and no exp means no denormal tail.
template <class S>
inline typename S::V vgelu(typename S::V x) {
  using V = typename S::V;
  const V z = S::min(S::abs(S::mul(x, S::set1(0.70710678118654752f))), S::set1(4.0f));
  const V t = S::mul(z, z);
  V p = S::set1(2.000091171794338e-06f);
  p = S::fmadd(p, t, S::set1(0.00028602275415323675f));
  p = S::fmadd(p, t, S::set1(0.0038950147572904825f));
  p = S::fmadd(p, t, S::set1(0.053133524954319f));
  p = S::fmadd(p, t, S::set1(0.19365523755550385f));
  p = S::fmadd(p, t, S::set1(1.1283791065216064f));
  V q = S::set1(3.763773202081211e-05f);
  q = S::fmadd(q, t, S::set1(0.0011908183805644512f));
  q = S::fmadd(q, t, S::set1(0.015226547606289387f));
  q = S::fmadd(q, t, S::set1(0.11541224271059036f));
  q = S::fmadd(q, t, S::set1(0.5049543380737305f));
  q = S::fmadd(q, t, S::set1(1.0f));
  const V erf_abs = S::min(S::div(S::mul(z, p), q), S::set1(1.0f));
  const V half_x = S::mul(S::set1(0.5f), x);
  return S::fmadd(half_x, S::copysign(erf_abs, x), half_x);
}

template <class S>
inline typename S::V vtanh(typename S::V x) {
  using V = typename S::V;
  const V one = S::set1(1.0f);
  const V ax = S::abs(x);
  // 1 - 2 / (e^{2|x|} + 1) for most of the range; near 0 that subtraction cancels, so a Taylor polynomial.
  // |x| is capped at 9.5, where tanh already rounds to 1 in float, so 1 / (e^{2|x|} + 1) never goes denormal.
  const V capped = S::min(ax, S::set1(9.5f));
  const V big = S::sub(one, S::div(S::set1(2.0f), S::add(vexp<S>(S::add(capped, capped)), one)));
  const V x2 = S::mul(x, x);
  V p = S::set1(-17.0f / 315.0f);
  p = S::fmadd(p, x2, S::set1(2.0f / 15.0f));
  p = S::fmadd(p, x2, S::set1(-1.0f / 3.0f));
  p = S::fmadd(p, x2, one);
  const V small = S::mul(ax, p);
  return S::copysign(S::select_lt(ax, S::set1(0.0625f), small, big), x);
}

template <class S>
inline typename S::V vgelu_tanh(typename S::V x) {
  using V = typename S::V;
  const V inner = S::mul(S::set1(0.7978845608028654f), S::fmadd(S::set1(0.044715f), S::mul(x, S::mul(x, x)), x));
  return S::mul(S::mul(S::set1(0.5f), x), S::add(S::set1(1.0f), vtanh<S>(inner)));
}

// Applies the epilogue in place to NV vectors of row `row` of Y at yp (lane offset `lane` within the row).
// Kernels store their raw sums first and then call this on the rows they just wrote: with no accumulators live,
// the activation's constants and temporaries get registers (applied inside the accumulator loop, GELU cost 3x
// its stand-alone time), and the activation is chosen once per row, not once per vector.
template <class S, int NV>
inline void finish_row(float* yp, int32_t row, int64_t lane, const Epilogue& ep) {
  using V = typename S::V;
  V v[NV];
  const V b = S::set1(ep.bias ? ep.bias[row] : 0.0f);
  for (int i = 0; i < NV; ++i) v[i] = S::add(S::load(yp + i * S::kLanes), b);
  switch (ep.act) {
    case Activation::kGelu:
      for (int i = 0; i < NV; ++i) v[i] = vgelu<S>(v[i]);
      break;
    case Activation::kGeluTanh:
      for (int i = 0; i < NV; ++i) v[i] = vgelu_tanh<S>(v[i]);
      break;
    case Activation::kRelu:
      for (int i = 0; i < NV; ++i) v[i] = S::max(v[i], S::zero());
      break;
    case Activation::kTanh:
      for (int i = 0; i < NV; ++i) v[i] = vtanh<S>(v[i]);
      break;
    case Activation::kNone:
      break;
  }
  if (ep.residual) {
    const float* r = ep.residual + row * ep.ldr + lane;
    for (int i = 0; i < NV; ++i) v[i] = S::add(v[i], S::load(r + i * S::kLanes));
  }
  for (int i = 0; i < NV; ++i) S::store(yp + i * S::kLanes, v[i]);
}
