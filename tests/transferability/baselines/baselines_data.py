"""Seeded synthetic inputs for the baseline tests: labelled Gaussian classes with structure."""

from __future__ import annotations

import numpy as np


def class_gaussians(
    n: int, d: int, n_classes: int, seed: int, separation: float = 1.5, scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """(n, d) features and labels 0..n_classes-1 (every class present, balanced up to one).

    Class means along the first axes, anisotropic noise (per-axis std from 0.5 to 1.5) and a
    random rotation, so no metric sees an axis-aligned special case.
    """
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % n_classes
    rng.shuffle(labels)
    means = np.zeros((n_classes, d))
    means[:, : min(d, n_classes)] = separation * np.eye(n_classes, d)[:, : min(d, n_classes)]
    noise = rng.normal(size=(n, d)) * np.linspace(0.5, 1.5, d)
    rot, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return scale * (means[labels] + noise) @ rot.T, labels


def diagonal_sample(n: int, mean: np.ndarray, variances: np.ndarray, seed: int) -> np.ndarray:
    """(n, d) samples whose sample mean is exactly `mean` and unbiased covariance diag(variances).

    Columns of an orthonormal basis orthogonal to the ones vector, scaled by sqrt((n-1) v).
    """
    d = mean.size
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(np.column_stack([np.ones(n), rng.normal(size=(n, d))]))
    z = q[:, 1 : d + 1] * np.sqrt((n - 1) * variances)[None, :]
    return mean[None, :] + z
