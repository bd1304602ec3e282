"""CCFV (Yang et al., MICCAI 2023): consistent class features and feature variety across cases.

Per stage s, with cases m = 1..M:
- variety V_s = mean over case pairs i < j of 1 / sqrt(||g_i - g_j||² + 1e-3), g_m the mean
  sampled feature of case m (EndoluminalSurgicalVision-IMR/CCFV ``cal_variety``);
- consistency W_s = mean over foreground classes c of the mean over case pairs i < j of
  ``gaussian_w2`` between the class-c features of case i and of case j;
- CCFV = Σ_s log(V_s / W_s).

Deliberate difference: the released ``main.py`` accumulates ``w += w / (M²/2) / K`` inside the
class loop (compounding W); we follow the paper's mean. Pairs where either case has fewer than 2
samples of the class are skipped (an unbiased covariance needs 2); a class with no valid pair is
left out of the mean.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from transferability._validation import as_labels, as_points
from transferability.baselines._common import single_threaded

VARIETY_EPS = 1e-3
BACKGROUND = 0
_ROUNDING = 64 * np.finfo(np.float64).eps


@dataclass(frozen=True)
class _Gaussian:
    """Sample mean, trace of the unbiased covariance and a factor A with cov = A Aᵀ."""

    mean: NDArray[np.float64]
    trace: float
    factor: NDArray[np.float64]  # (D, r), r = min(n, D)


def _fit_gaussian(x: NDArray[np.float64]) -> _Gaussian:
    """Gaussian summary of (n, D) samples, n >= 2.

    With n <= D the factor is the scaled centred data (D x n); otherwise it is V Λ^{1/2} from a
    symmetric eigen-decomposition of the D x D covariance (negative rounding noise clipped).
    """
    n, d = x.shape
    mean = x.mean(axis=0)
    centred = x - mean
    if n <= d:
        factor = centred.T / np.sqrt(n - 1)
    else:
        evals, vecs = np.linalg.eigh(centred.T @ centred / (n - 1))
        factor = vecs * np.sqrt(np.maximum(evals, 0.0))[None, :]
    trace = float(np.sum(centred * centred) / (n - 1))
    return _Gaussian(mean, trace, factor)


def _w2(a: _Gaussian, b: _Gaussian) -> float:
    """Gaussian 2-Wasserstein distance between two summaries (see `gaussian_w2`)."""
    # tr sqrtm(Σa Σb) = Σ singular values of Aaᵀ Ab: the eigenvalues of Σa Σb are those of
    # Aaᵀ Σb Aa = (Aaᵀ Ab)(Aaᵀ Ab)ᵀ, and their square roots are the singular values.
    cross = a.factor.T @ b.factor
    tr_sqrt = float(np.sum(np.linalg.svd(cross, compute_uv=False)))
    diff = a.mean - b.mean
    scale = float(diff @ diff) + a.trace + b.trace
    value = scale - 2.0 * tr_sqrt
    if abs(value) <= _ROUNDING * scale:
        return 0.0  # W2² below the rounding of its own terms: equal Gaussians
    return float(np.sqrt(abs(value)))


@single_threaded
def gaussian_w2(f1: ArrayLike, f2: ArrayLike) -> float:
    """W2 between Gaussians fitted to (n1, D) and (n2, D) samples (unbiased covariances).

    sqrt(|‖μ1 − μ2‖² + tr Σ1 + tr Σ2 − 2 tr sqrtm(Σ1 Σ2)|), the trace of the matrix square root
    taken from symmetric factorisations instead of ``scipy.linalg.sqrtm`` (lower is closer).
    A W2² within 64 eps of ‖μ1 − μ2‖² + tr Σ1 + tr Σ2 is rounding and returns exactly 0 (the
    released code returns sqrt(|rounding|), ~1e-7 of the feature scale, there).
    """
    a = as_points(f1, name="f1")
    b = as_points(f2, name="f2")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"f1 and f2 have different feature dimensions: {a.shape[1]} vs {b.shape[1]}")
    return _w2(_fit_gaussian(a), _fit_gaussian(b))


@single_threaded
def ccfv_variety(case_means: ArrayLike) -> float:
    """Mean over case pairs of 1 / sqrt(||g_i - g_j||² + 1e-3) for (M, D) case means, M >= 2."""
    g = as_points(case_means, name="case_means")
    return _variety(g)


def _variety(g: NDArray[np.float64]) -> float:
    i, j = np.triu_indices(g.shape[0], k=1)
    diff = g[i] - g[j]
    return float(np.mean(1.0 / np.sqrt(np.sum(diff * diff, axis=1) + VARIETY_EPS)))


@single_threaded
def ccfv(cases: Sequence[Mapping[str, tuple[ArrayLike, ArrayLike]]]) -> float:
    """CCFV over stages; `cases` holds one {stage_name: (features (n, D_s), labels (n,))} per case.

    Every case must name the same stages; label 0 is background (it enters the case means used
    for the variety, not the class consistency). Higher is better.
    """
    return float(sum(ccfv_per_stage(cases).values()))


def ccfv_per_stage(cases: Sequence[Mapping[str, tuple[ArrayLike, ArrayLike]]]) -> dict[str, float]:
    """log(V_s / W_s) for every stage s (see the module docstring)."""
    if isinstance(cases, Mapping) or len(cases) < 2:
        raise ValueError("CCFV needs a sequence of at least 2 cases")
    stages = list(cases[0].keys())
    if not stages:
        raise ValueError("CCFV needs at least one stage per case")
    for m, case in enumerate(cases):
        if set(case.keys()) != set(stages):
            raise ValueError(f"case {m} has stages {sorted(case)}, expected {sorted(stages)}")
    out: dict[str, float] = {}
    for stage in stages:
        out[stage] = _stage_term(stage, [case[stage] for case in cases])
    return out


def _stage_term(stage: str, per_case: list[tuple[ArrayLike, ArrayLike]]) -> float:
    feats: list[NDArray[np.float64]] = []
    labs: list[NDArray[np.int64]] = []
    dim = None
    for m, (f, y) in enumerate(per_case):
        x = as_points(f, name=f"features of case {m}, stage {stage!r}", min_points=1)
        if dim is None:
            dim = x.shape[1]
        elif x.shape[1] != dim:
            raise ValueError(f"stage {stage!r}: case {m} has {x.shape[1]} features, case 0 has {dim}")
        feats.append(x)
        labs.append(as_labels(y, x.shape[0], name=f"labels of case {m}, stage {stage!r}"))
    variety = _variety(np.stack([x.mean(axis=0) for x in feats]))
    classes = sorted({int(c) for y in labs for c in np.unique(y)} - {BACKGROUND})
    per_class: list[float] = []
    for c in classes:
        fits = [_fit_gaussian(x[y == c]) if np.count_nonzero(y == c) >= 2 else None for x, y in zip(feats, labs)]
        dists = [_w2(a, b) for a, b in combinations(fits, 2) if a is not None and b is not None]
        if dists:
            per_class.append(float(np.mean(dists)))
    if not per_class:
        raise ValueError(
            f"stage {stage!r}: no foreground class has >= 2 samples in at least 2 cases; CCFV undefined"
        )
    consistency = float(np.mean(per_class))
    if consistency <= 0.0:
        raise ValueError(f"stage {stage!r}: zero class Wasserstein distance between cases; CCFV is +inf")
    return float(np.log(variety / consistency))
