"""LogME (You et al., ICML 2021): maximum evidence of a Bayesian linear model on one-hot targets.

For each class c, with targets y_c = 1[label == c], the model y = F w + noise,
w ~ N(0, I / alpha), noise ~ N(0, 1 / beta), has log evidence L(alpha, beta). LogME is
mean_c max_{alpha, beta} L / N.

How it is computed: one eigen-decomposition of FᵀF (or F Fᵀ when N <= D) serves every class.
Eliminating beta in closed form (beta* = N / Q(t)) leaves a 1-D profile in t = alpha / beta,

    L(t) / N = [-1/2 Σ_i log(1 + σ_i / t) - N/2 log(Q(t) / N) - N/2 (1 + log 2π)] / N,
    Q(t) = Σ_i x_i² t / (t + σ_i) + r,

with σ_i the nonzero eigenvalues of FᵀF, x = Uᵀ y_c the target in the left singular basis and r
the part of ||y_c||² outside the column space of F. The profile is maximised for all classes at
once: a log-spaced grid over t, then golden-section refinement around the best grid point.
When N <= D the targets can be interpolated and the supremum may lie at beta -> inf (a finite,
noise-free limit); the grid reaches t = e^-40 σ_min, so the value is then that limit.

Deliberate differences from thuml/LogME (``LogME._fit_fixed_point``), documented in
tests/transferability/baselines:
- the D - k zero eigenvalues of FᵀF are counted in log|alpha I + beta FᵀF| (thuml/LogME issue 23
  / PR 24): without them the evidence is wrong by about D/(2N) log(alpha) when N < D;
- the evidence is maximised to convergence, not for at most 11 fixed-point steps with a 1e-3
  stopping rule (which leaves the value several percent short when N <= D), and without the
  1e-5 added to the fixed-point denominators (which breaks the exact invariance of LogME to a
  global feature scale). Where the reference converges (N > D, unit-scale features) the two
  agree to better than 1e-6 relative.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike, NDArray

from transferability.baselines._common import features_and_classes, one_hot, single_threaded

_GRID_POINTS = 1024
_GRID_MARGIN = 40.0  # natural-log units beyond the eigenvalue range (e^-40 ~ 4e-18)
_GOLDEN_STEPS = 90
_INV_PHI = (np.sqrt(5.0) - 1.0) / 2.0


@single_threaded
def logme(features: ArrayLike, labels: ArrayLike) -> float:
    """LogME score of (N, D) features for integer labels: mean per-class log evidence / N.

    Higher is better. Exact maximum evidence for any N, D (see module docstring).
    """
    feats, codes, n_classes = features_and_classes(features, labels)
    evidence, _, _ = max_evidence(feats, one_hot(codes, n_classes))
    return float(np.mean(evidence))


def max_evidence(
    feats: NDArray[np.float64], targets: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Per target column of (N, C) `targets`: (max log evidence / N, alpha*, beta*).

    When F is numerically zero the evidence grows towards alpha -> inf (w = 0); alpha is then
    reported as inf.
    """
    n, _ = feats.shape
    sigma, proj = _spectrum(feats)
    x2 = proj(targets) ** 2  # (k, C)
    y2 = np.sum(targets * targets, axis=0)
    # Part of ||y||² outside the column space of F (exactly zero when F has rank N).
    resid = np.maximum(y2 - x2.sum(axis=0), 0.0) if sigma.size < n else np.zeros_like(y2)
    if sigma.size == 0:
        t = np.full(targets.shape[1], np.inf)
        q = resid
        value = -0.5 * n * np.log(q / n) - 0.5 * n * (1.0 + np.log(2.0 * np.pi))
    else:
        t = np.exp(_maximise_profile(sigma, x2, resid, n))
        value, q = _profile(t, sigma, x2, resid, n)
    beta = n / q
    return value / n, t * beta, beta


def _spectrum(
    feats: NDArray[np.float64],
) -> tuple[NDArray[np.float64], Callable[[NDArray[np.float64]], NDArray[np.float64]]]:
    """Nonzero eigenvalues σ of FᵀF and a map y -> Uᵀ y onto the matching left singular vectors.

    One symmetric eigen-decomposition of the smaller Gram matrix. Eigenvalues at or below
    max(N, D) · eps · σ_max are numerically zero and dropped: they enter the evidence only
    through the count of zero eigenvalues, which the profile already accounts for.
    """
    n, d = feats.shape
    gram = feats.T @ feats if n > d else feats @ feats.T
    evals, vecs = np.linalg.eigh(gram)
    top = float(evals[-1])
    keep = evals > max(n, d) * np.finfo(np.float64).eps * top if top > 0 else np.zeros(evals.size, bool)
    sigma = evals[keep]
    basis = vecs[:, keep]
    if n > d:
        scale = 1.0 / np.sqrt(sigma)

        def proj(y: NDArray[np.float64]) -> NDArray[np.float64]:
            return (basis.T @ (feats.T @ y)) * scale[:, None]

    else:

        def proj(y: NDArray[np.float64]) -> NDArray[np.float64]:
            return basis.T @ y

    return sigma, proj


def _profile(
    t: NDArray[np.float64],
    sigma: NDArray[np.float64],
    x2: NDArray[np.float64],
    resid: NDArray[np.float64],
    n: int,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Profile log evidence L(t) and Q(t) for each class; `t` has shape (C,)."""
    shrink = t[None, :] / (t[None, :] + sigma[:, None])
    q = np.sum(x2 * shrink, axis=0) + resid
    logdet = np.sum(np.log1p(sigma[:, None] / t[None, :]), axis=0)
    with np.errstate(divide="ignore"):
        value = -0.5 * logdet - 0.5 * n * np.log(q / n) - 0.5 * n * (1.0 + np.log(2.0 * np.pi))
    return value, q


def _maximise_profile(
    sigma: NDArray[np.float64], x2: NDArray[np.float64], resid: NDArray[np.float64], n: int
) -> NDArray[np.float64]:
    """argmax over u = log t of L(e^u), per class: log grid, then golden-section refinement."""
    grid = np.linspace(
        np.log(sigma.min()) - _GRID_MARGIN, np.log(sigma.max()) + _GRID_MARGIN, _GRID_POINTS
    )
    t_grid = np.exp(grid)
    # (G, k) shrinkage factors are shared by every class.
    shrink = t_grid[:, None] / (t_grid[:, None] + sigma[None, :])
    q_grid = shrink @ x2 + resid[None, :]
    logdet_grid = np.sum(np.log1p(sigma[None, :] / t_grid[:, None]), axis=1)
    with np.errstate(divide="ignore"):
        values = -0.5 * logdet_grid[:, None] - 0.5 * n * np.log(q_grid)
    best = np.argmax(values, axis=0)
    a = grid[np.maximum(best - 1, 0)]
    b = grid[np.minimum(best + 1, _GRID_POINTS - 1)]
    c = b - _INV_PHI * (b - a)
    e = a + _INV_PHI * (b - a)
    fc = _profile(np.exp(c), sigma, x2, resid, n)[0]
    fe = _profile(np.exp(e), sigma, x2, resid, n)[0]
    for _ in range(_GOLDEN_STEPS):
        left = fc >= fe  # the maximum lies in [a, e]; otherwise in [c, b]
        b = np.where(left, e, b)
        a = np.where(left, a, c)
        probe = np.where(left, b - _INV_PHI * (b - a), a + _INV_PHI * (b - a))
        f_probe = _profile(np.exp(probe), sigma, x2, resid, n)[0]
        c, e = np.where(left, probe, e), np.where(left, c, probe)
        fc, fe = np.where(left, f_probe, fe), np.where(left, fc, f_probe)
    u = np.where(fc >= fe, c, e)
    # Never return less than the best grid point (guards a bracket holding two maxima).
    f_grid = _profile(np.exp(grid[best]), sigma, x2, resid, n)[0]
    return np.where(np.maximum(fc, fe) >= f_grid, u, grid[best])
