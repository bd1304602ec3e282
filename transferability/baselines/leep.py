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

import numpy as np
from numpy.typing import ArrayLike, NDArray

from transferability._validation import as_points, check_probabilities
from transferability.baselines._common import (
    COMPONENTS_PER_CLASS,
    PCA_VARIANCE,
    class_codes,
    features_and_classes,
    fit_gmm,
    leep_core,
    nce_core,
    single_threaded,
)

__all__ = ["COMPONENTS_PER_CLASS", "PCA_VARIANCE", "gmm_posteriors", "leep", "nce", "nleep"]

@single_threaded
def leep(source_probs: ArrayLike, labels: ArrayLike) -> float:
    """LEEP of (N, Z) row-stochastic source predictions for N integer target labels (always <= 0)."""
    probs = check_probabilities(source_probs, name="source_probs")
    if probs.shape[0] < 2:
        raise ValueError(f"source_probs needs at least 2 points, got {probs.shape[0]}")
    codes, n_classes = class_codes(labels, probs.shape[0])
    return leep_core(probs, codes, n_classes)


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
    return nce_core(z_codes, n_source, y_codes, n_classes)


@single_threaded
def gmm_posteriors(features: ArrayLike, n_classes: int, seed: int = 0) -> NDArray[np.float64]:
    """(N, 5·n_classes) posteriors of the NLEEP Gaussian mixture on PCA(80%)-reduced features.

    Full covariances, scikit-learn defaults otherwise (k-means init, reg_covar 1e-6, 100 EM
    steps), ``random_state=seed``; float64 throughout (google-research casts to float32).
    """
    feats = as_points(features, name="features")
    if int(n_classes) != n_classes or n_classes < 1:
        raise ValueError(f"n_classes must be a positive integer, got {n_classes}")
    return fit_gmm(feats, int(n_classes), seed)[0]


@single_threaded
def nleep(features: ArrayLike, labels: ArrayLike, seed: int = 0) -> float:
    """NLEEP: LEEP of Gaussian-mixture posteriors (see `gmm_posteriors`) for the labels (always <= 0)."""
    feats, codes, n_classes = features_and_classes(features, labels)
    return leep_core(fit_gmm(feats, n_classes, seed)[0], codes, n_classes)
