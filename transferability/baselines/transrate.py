"""TransRate (Huang et al., ICML 2022): coding rate of the features minus the class-conditional one.

    R(Z, ε) = 1/2 log det(I + ZᵀZ / (n ε)),    TrR = R(Z, ε) - (1/C) Σ_c R(Z_c, ε),

with Z the column-centred features and Z_c its rows of class c (not re-centred), as in
thuml/Transfer-Learning-Library ``tllib/ranking/transrate.py`` (default ε = 1e-4). The log-determinants
come from the eigenvalues of the smaller Gram matrix (Sylvester), so a class with n_c < D costs
an n_c x n_c problem.

Difference: C is the number of classes present; tllib uses max(label) + 1 and breaks
(empty class: division by zero) when an id is missing.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from transferability.baselines._common import features_and_classes, single_threaded


@single_threaded
def transrate(features: ArrayLike, labels: ArrayLike, eps: float = 1e-4) -> float:
    """TransRate of (N, D) features for integer labels with distortion `eps` (higher is better)."""
    if not (np.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a positive finite number, got {eps}")
    feats, codes, n_classes = features_and_classes(features, labels)
    centred = feats - feats.mean(axis=0)
    rate_all = coding_rate(centred, eps)
    rate_cond = sum(coding_rate(centred[codes == c], eps) for c in range(n_classes))
    return float(rate_all - rate_cond / n_classes)


def coding_rate(z: NDArray[np.float64], eps: float) -> float:
    """1/2 log det(I + zᵀz / (n ε)) for an (n, D) block, via the smaller Gram matrix."""
    n, d = z.shape
    gram = z.T @ z if n > d else z @ z.T
    evals = np.maximum(np.linalg.eigvalsh(gram), 0.0)
    return 0.5 * float(np.sum(np.log1p(evals / (n * eps))))
