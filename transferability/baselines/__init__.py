"""Established transferability estimators, the baselines TopoRank is compared with (metrics.md §6).

numpy in, float out, higher is better. Each agrees with its authors' public code on the same
inputs (float64, 1e-6 relative) except where a module docstring documents a deliberate fix.
"""

from transferability.baselines.ccfv import ccfv, ccfv_per_stage, ccfv_variety, gaussian_w2
from transferability.baselines.gbc import gbc
from transferability.baselines.hscore import hscore, regularized_hscore
from transferability.baselines.leep import gmm_posteriors, leep, nce, nleep
from transferability.baselines.logme import logme
from transferability.baselines.score import BASELINE_NAMES, score_all, score_all_with_diagnostics
from transferability.baselines.transrate import transrate

__all__ = [
    "BASELINE_NAMES",
    "ccfv",
    "ccfv_per_stage",
    "ccfv_variety",
    "gaussian_w2",
    "gbc",
    "gmm_posteriors",
    "hscore",
    "leep",
    "logme",
    "nce",
    "nleep",
    "regularized_hscore",
    "score_all",
    "score_all_with_diagnostics",
    "transrate",
]
