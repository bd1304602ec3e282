"""H-score (Bao et al., ICIP 2019) and its Ledoit-Wolf regularised form (Ibrahim et al., 2022).

    H = tr(cov(f)⁺ cov(E[f | y])),    H_α = tr(cov_α(f)⁻¹ (1 - α) cov(E[f | y])),

following thuml/Transfer-Learning-Library ``tllib/ranking/hscore.py``: unbiased (N - 1)
covariances, a true matrix product inside the trace (google-research's ``hscore.py`` multiplies
elementwise there, which is not the H-score), and for H_α the Ledoit-Wolf shrunk covariance of the
centred features with its shrinkage α.

Difference: the pseudo-inverse drops eigenvalues at or below D · eps · λ_max (the standard
numerical-rank cutoff) instead of tllib's 1e-15 · λ_max. The rounding of an exactly singular
covariance (N <= D, collinear or dead channels) measures ~2e-16 λ_max, only ~5x below tllib's
cutoff: crossing it would multiply noise by up to 1e15. Both give the same value on every input
in the tests, the rank-deficient ones included.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.covariance import ledoit_wolf_shrinkage

from transferability.baselines._common import class_means, features_and_classes, single_threaded


@single_threaded
def hscore(features: ArrayLike, labels: ArrayLike) -> float:
    """H-score of (N, D) features for integer labels (higher is better)."""
    feats, codes, n_classes = features_and_classes(features, labels)
    n = feats.shape[0]
    centred = feats - feats.mean(axis=0)
    cov = centred.T @ centred / (n - 1)
    return _trace_pinv_between(cov, centred, codes, n_classes)


@single_threaded
def regularized_hscore(features: ArrayLike, labels: ArrayLike) -> float:
    """Regularised H-score: Ledoit-Wolf shrunk feature covariance, between-class term x (1 - α)."""
    feats, codes, n_classes = features_and_classes(features, labels)
    n, d = feats.shape
    centred = feats - feats.mean(axis=0)
    shrinkage = float(ledoit_wolf_shrinkage(centred, assume_centered=False))
    emp = centred.T @ centred / n  # Ledoit-Wolf shrinks the biased (1/N) covariance
    mu = np.trace(emp) / d
    cov = (1.0 - shrinkage) * emp
    cov[np.diag_indices(d)] += shrinkage * mu
    return (1.0 - shrinkage) * _trace_pinv_between(cov, centred, codes, n_classes)


def _trace_pinv_between(
    cov: NDArray[np.float64], centred: NDArray[np.float64], codes: NDArray[np.int64], n_classes: int
) -> float:
    """tr(cov⁺ B), B = Σ_c n_c (μ_c - μ)(μ_c - μ)ᵀ / (N - 1) the covariance of the class means."""
    n, d = centred.shape
    means, counts = class_means(centred, codes, n_classes)  # centred: μ = 0
    evals, vecs = np.linalg.eigh(cov)
    top = float(evals[-1])
    if top <= 0:
        return 0.0
    keep = evals > d * np.finfo(np.float64).eps * top
    coords = means @ vecs[:, keep]  # (C, r)
    return float(np.sum(counts[:, None] * coords**2 / evals[keep][None, :]) / (n - 1))
