"""GBC (Pándy et al., CVPR 2022): Gaussian Bhattacharyya coefficient class separability.

Each class is a diagonal Gaussian (per-dimension mean and population variance, variance floored
at 1e-4 as in google-research ``stable_transfer``); GBC = -Σ_{c≠c'} exp(-D_B(c, c')) over ordered
class pairs, with the Bhattacharyya distance

    D_B = 1/8 Σ_d (μ_d - μ'_d)² / v̄_d + 1/2 Σ_d [log v̄_d - (log v_d + log v'_d) / 2],
    v̄ = (v + v') / 2.

Range [-C(C-1), 0]: -C(C-1) for identical class Gaussians, 0 for perfectly separated ones.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from transferability.baselines._common import class_means, features_and_classes, one_hot, single_threaded

VARIANCE_FLOOR = 1e-4


@single_threaded
def gbc(features: ArrayLike, labels: ArrayLike) -> float:
    """GBC with diagonal class Gaussians of (N, D) features for integer labels (always <= 0)."""
    feats, codes, n_classes = features_and_classes(features, labels)
    means, counts = class_means(feats, codes, n_classes)
    centred = feats - means[codes]
    var = one_hot(codes, n_classes).T @ (centred * centred) / counts[:, None]
    var = np.maximum(var, VARIANCE_FLOOR)
    log_var = np.log(var)
    total = 0.0
    for c in range(n_classes):
        avg = 0.5 * (var[c][None, :] + var)  # (C, D)
        mahal = np.sum((means[c][None, :] - means) ** 2 / avg, axis=1) / 8.0
        logs = np.sum(np.log(avg) - 0.5 * (log_var[c][None, :] + log_var), axis=1) / 2.0
        coeff = np.exp(-(mahal + logs))
        coeff[c] = 0.0
        total += float(np.sum(coeff))
    return -total
