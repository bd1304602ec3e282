"""LEEP, NCE and NLEEP: transferability from (pseudo-)source predictions.

- LEEP (Nguyen et al., ICML 2020): mean log of the expected empirical prediction
  Σ_z θ(x)_z P̂(y | z), with P̂(y | z) estimated from the soft joint of source predictions θ and
  target labels.
- NCE (Tran et al., ICCV 2019): -H(Y | Z) of the empirical joint of hard source labels Z and
  target labels Y.
- NLEEP (Li et al., CVPR 2021): LEEP with θ = posteriors of a Gaussian mixture fitted on the
  features (PCA to 80% variance, 5 components per target class), for encoders with no source
  classifier.

Deliberate difference: thuml's LEEP divides by zero (NaN) when a source column of θ sums to zero;
such a column carries no mass for any sample, so its P̂(y | z) never enters the score and is set
to 0 (google-research's ``divide_no_nan``). The value equals the reference's on θ without that
column.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture

from transferability._validation import as_points, check_probabilities
from transferability.baselines._common import (
    class_codes,
    features_and_classes,
    one_hot,
    single_threaded,
)

PCA_VARIANCE = 0.8
"""Fraction of variance kept before the NLEEP mixture (google-research's ``pca_reduction``)."""
COMPONENTS_PER_CLASS = 5
"""Gaussian components per target class (Li et al. 2021)."""


@single_threaded
def leep(source_probs: ArrayLike, labels: ArrayLike) -> float:
    """LEEP of (N, Z) row-stochastic source predictions for N integer target labels (always <= 0)."""
    probs = check_probabilities(source_probs, name="source_probs")
    if probs.shape[0] < 2:
        raise ValueError(f"source_probs needs at least 2 points, got {probs.shape[0]}")
    codes, n_classes = class_codes(labels, probs.shape[0])
    return _leep(probs, codes, n_classes)


def _leep(probs: NDArray[np.float64], codes: NDArray[np.int64], n_classes: int) -> float:
    n = probs.shape[0]
    joint = one_hot(codes, n_classes).T @ probs / n  # (C, Z): P̂(y, z)
    marginal = joint.sum(axis=0)  # P̂(z)
    cond = np.divide(joint, marginal, out=np.zeros_like(joint), where=marginal > 0)  # P̂(y | z)
    # eep_i = Σ_z θ_iz P̂(y_i | z) >= θ_iz² / n > 0 for the largest θ_iz, so the log is finite.
    eep = np.einsum("nz,nz->n", probs, cond[codes])
    return float(np.mean(np.log(eep)))


@single_threaded
def nce(source_labels: ArrayLike, labels: ArrayLike) -> float:
    """Negative conditional entropy -H(Y | Z) of hard source labels Z and target labels Y (always <= 0)."""
    src = np.asarray(source_labels)
    if src.ndim != 1:
        raise ValueError(f"source_labels must be 1-D, got shape {src.shape}")
    if src.shape[0] < 2:
        raise ValueError(f"source_labels needs at least 2 points, got {src.shape[0]}")
    z_codes, n_source = class_codes(src, src.shape[0], name="source_labels", min_classes=1)
    y_codes, n_classes = class_codes(labels, src.shape[0])
    return _nce(z_codes, n_source, y_codes, n_classes)


def _nce(z_codes: NDArray[np.int64], n_source: int, y_codes: NDArray[np.int64], n_classes: int) -> float:
    n = z_codes.size
    counts = np.bincount(y_codes * n_source + z_codes, minlength=n_classes * n_source)
    joint = counts.reshape(n_classes, n_source) / n
    marginal = joint.sum(axis=0)
    nz = joint > 0
    cond = joint[nz] / np.broadcast_to(marginal, joint.shape)[nz]
    return float(np.sum(joint[nz] * np.log(cond)))


@single_threaded
def gmm_posteriors(features: ArrayLike, n_classes: int, seed: int = 0) -> NDArray[np.float64]:
    """(N, 5·n_classes) posteriors of the NLEEP Gaussian mixture on PCA(80%)-reduced features.

    Full covariances, scikit-learn defaults otherwise (k-means init, reg_covar 1e-6, 100 EM
    steps), ``random_state=seed``; float64 throughout (google-research casts to float32).
    """
    feats = as_points(features, name="features")
    if int(n_classes) != n_classes or n_classes < 1:
        raise ValueError(f"n_classes must be a positive integer, got {n_classes}")
    return _fit_gmm(feats, int(n_classes), seed)[0]


def _fit_gmm(
    feats: NDArray[np.float64], n_classes: int, seed: int
) -> tuple[NDArray[np.float64], dict[str, Any]]:
    """Posteriors of the NLEEP mixture and a summary (PCA dims, components, EM steps, convergence)."""
    n_components = COMPONENTS_PER_CLASS * n_classes
    if feats.shape[0] < n_components:
        raise ValueError(
            f"NLEEP needs at least {n_components} points for {n_components} mixture components, "
            f"got {feats.shape[0]}"
        )
    if not np.any(np.ptp(feats, axis=0) > 0):
        raise ValueError("features are constant: PCA/NLEEP undefined")
    reduced = PCA(n_components=PCA_VARIANCE, svd_solver="full").fit_transform(feats)
    gmm = GaussianMixture(n_components=n_components, random_state=seed).fit(reduced)
    info = {
        "pca_dims": int(reduced.shape[1]),
        "n_components": n_components,
        "em_iterations": int(gmm.n_iter_),
        "converged": bool(gmm.converged_),
    }
    return gmm.predict_proba(reduced), info


@single_threaded
def nleep(features: ArrayLike, labels: ArrayLike, seed: int = 0) -> float:
    """NLEEP: LEEP of Gaussian-mixture posteriors (see `gmm_posteriors`) for the labels (always <= 0)."""
    feats, codes, n_classes = features_and_classes(features, labels)
    return _leep(_fit_gmm(feats, n_classes, seed)[0], codes, n_classes)
