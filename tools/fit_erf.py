"""Fits the rational erf approximation used by the SIMD GELU (csrc/kernels/simd/vmath.inl).

    python tools/fit_erf.py

erf(x) ~ x P(x^2) / Q(x^2) on [0, 4], P and Q of degree 5, Q(0) = 1: linearised least squares
(x P - erf Q = 0), reweighted by 1 / Q from the previous fit (Loeb's iteration) so the residual approaches the
relative error of the rational function. Prints the float32 coefficients (highest degree last) and the worst
absolute error of evaluating them in float32 with Horner's rule, as the kernel does.
"""

import math

import numpy as np
from numpy.polynomial import polynomial as poly

X_MAX = 4.0  # erf(4) = 1 - 1.5e-8 rounds to 1 in float32
DEGREE = 5


def fit(degree: int = DEGREE) -> tuple[np.ndarray, np.ndarray]:
    erf = np.vectorize(math.erf)
    x = np.concatenate([np.cos(np.linspace(0, np.pi, 6000)) * X_MAX / 2 + X_MAX / 2, np.linspace(0, X_MAX, 6000)])
    f, t, w = erf(x), x * x, np.ones_like(x)
    for _ in range(40):
        a = np.concatenate([x[:, None] * t[:, None] ** np.arange(degree + 1),
                            -(f[:, None] * t[:, None] ** np.arange(1, degree + 1))], axis=1)
        coef, *_ = np.linalg.lstsq(a * w[:, None], f * w, rcond=None)
        p, q = coef[: degree + 1], np.concatenate([[1.0], coef[degree + 1:]])
        w = 1.0 / np.abs(poly.polyval(t, q))
    return p.astype(np.float32), q.astype(np.float32)


def float32_error(p: np.ndarray, q: np.ndarray) -> float:
    xs = np.linspace(0, 6, 400001).astype(np.float32)
    z = np.minimum(xs, np.float32(X_MAX))
    t = z * z
    num, den = p[-1], q[-1]
    for c in p[::-1][1:]:
        num = np.float32(num * t + c)
    for c in q[::-1][1:]:
        den = np.float32(den * t + c)
    approx = np.minimum(np.float32(z * num) / den, np.float32(1.0))
    exact = np.vectorize(math.erf)(xs.astype(np.float64))
    return float(np.abs(approx.astype(np.float64) - exact).max())


if __name__ == "__main__":
    p, q = fit()
    print("P:", [float(c) for c in p])
    print("Q:", [float(c) for c in q])
    print(f"max |error| in float32: {float32_error(p, q):.2e}")
