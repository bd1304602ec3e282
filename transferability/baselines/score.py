"""Every baseline from the shared samples of one model (metrics.md §6), with diagnostics.

For encoders without a source classifier (the self-supervised zoo) the "source" of LEEP and NCE
is the NLEEP Gaussian mixture: LEEP uses its posteriors (then equal to NLEEP) and NCE its hard
labels, the argmax of the posteriors (ties to the lower component). A model that has a source
head may pass its predictions as `source_probs` instead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from transferability._validation import as_labels, as_points, check_probabilities
from transferability.baselines._common import features_and_classes, fit_gmm, leep_core, nce_core, single_threaded
from transferability.baselines.ccfv import ccfv_per_stage
from transferability.baselines.gbc import gbc
from transferability.baselines.hscore import hscore, regularized_hscore
from transferability.baselines.logme import logme
from transferability.baselines.transrate import transrate

BASELINE_NAMES = (
    "logme",
    "leep",
    "nleep",
    "nce",
    "gbc",
    "hscore",
    "regularized_hscore",
    "transrate",
    "ccfv",
)


def score_all(
    features: ArrayLike,
    labels: ArrayLike,
    case_ids: ArrayLike | None = None,
    *,
    seed: int = 0,
    stage_features: Mapping[str, ArrayLike] | None = None,
    source_probs: ArrayLike | None = None,
) -> dict[str, float]:
    """Every baseline that is defined for the input, keyed by name (see `BASELINE_NAMES`).

    Parameters
    ----------
    features : array-like of shape (N, D)
        Features at the sampled points.
    labels : array-like of shape (N,)
        Integer class of each point.
    case_ids : array-like of shape (N,), optional
        The case each point comes from; CCFV needs it (and two cases) and is left out without it.
    seed : int, default=0
        Seed of the randomised parts (the NLEEP mixture).
    stage_features : mapping of str to array-like of shape (N, D_stage), optional
        Features of every stage at the same points, for CCFV's sum over stages; default `features`
        alone.
    source_probs : array-like of shape (N, Z), optional
        Predictions of a source head, if the model has one; LEEP and NCE read them, else the
        NLEEP mixture's posteriors.

    Returns
    -------
    dict of str to float
        Name -> value, higher is better for each. A metric that cannot be computed is left out;
        `score_all_with_diagnostics` says why.
    """
    return score_all_with_diagnostics(
        features, labels, case_ids, seed=seed, stage_features=stage_features, source_probs=source_probs
    )[0]


@single_threaded
def score_all_with_diagnostics(
    features: ArrayLike,
    labels: ArrayLike,
    case_ids: ArrayLike | None = None,
    *,
    seed: int = 0,
    stage_features: Mapping[str, ArrayLike] | None = None,
    source_probs: ArrayLike | None = None,
) -> tuple[dict[str, float], dict[str, Any]]:
    """(scores, diagnostics) for one model's features at the shared samples.

    features: (N, D) features of the baseline stage; labels: (N,) class ids (0 = background);
    case_ids: (N,) case of each sample, needed by CCFV; stage_features: {stage: (N, D_s)} at the
    same samples for CCFV's sum over stages (default: `features` alone, as stage "features");
    source_probs: (N, Z) predictions of a source head, if the model has one.

    Invalid input (NaN, shapes, a single class, N < 2) raises ValueError. A metric undefined for
    valid input (CCFV with one case, NLEEP with fewer samples than mixture components) is left
    out of the scores and its reason is recorded under diagnostics["omitted"][name].
    Diagnostics also record the source used by LEEP/NCE, the NLEEP mixture's PCA dimensions,
    EM steps and convergence, and CCFV's per-stage terms.
    """
    feats, codes, n_classes = features_and_classes(features, labels)
    n = feats.shape[0]
    probs = None
    if source_probs is not None:
        probs = check_probabilities(source_probs, name="source_probs")
        if probs.shape[0] != n:
            raise ValueError(f"source_probs has {probs.shape[0]} rows but there are {n} points")
    stages = _stage_arrays(feats, stage_features, n)
    cases = None if case_ids is None else as_labels(case_ids, n, name="case_ids")
    label_ids = as_labels(labels, n)  # original ids: CCFV needs 0 = background

    scores: dict[str, float] = {}
    diagnostics: dict[str, Any] = {"omitted": {}, "n_samples": n, "n_classes": n_classes}

    def attempt(name: str, fn: Callable[[], float]) -> None:
        try:
            value = float(fn())
        except ValueError as err:
            diagnostics["omitted"][name] = str(err)
            return
        if not np.isfinite(value):
            diagnostics["omitted"][name] = f"non-finite value {value}"
            return
        scores[name] = value

    attempt("logme", lambda: logme(feats, codes))

    gmm: list[NDArray[np.float64]] = []

    def nleep_value() -> float:
        posteriors, info = fit_gmm(feats, n_classes, seed)
        gmm.append(posteriors)
        diagnostics["nleep_gmm"] = info
        return leep_core(posteriors, codes, n_classes)

    attempt("nleep", nleep_value)
    if probs is not None:
        diagnostics["source"] = "source_probs"
        attempt("leep", lambda: leep_core(probs, codes, n_classes))
        z = np.argmax(probs, axis=1)
        attempt("nce", lambda: nce_core(z, probs.shape[1], codes, n_classes))
    elif gmm and "nleep" in scores:
        diagnostics["source"] = "gmm (no source head): leep equals nleep, nce uses argmax of the GMM posteriors"
        scores["leep"] = scores["nleep"]
        z = np.argmax(gmm[0], axis=1)
        attempt("nce", lambda: nce_core(z, gmm[0].shape[1], codes, n_classes))
    else:
        reason = "no source head and the NLEEP mixture is undefined: " + str(diagnostics["omitted"].get("nleep"))
        diagnostics["omitted"]["leep"] = reason
        diagnostics["omitted"]["nce"] = reason

    attempt("gbc", lambda: gbc(feats, codes))
    attempt("hscore", lambda: hscore(feats, codes))
    attempt("regularized_hscore", lambda: regularized_hscore(feats, codes))
    attempt("transrate", lambda: transrate(feats, codes))

    if cases is None:
        diagnostics["omitted"]["ccfv"] = "no case_ids given; CCFV compares cases"
    else:
        case_list = [
            {name: (x[cases == m], label_ids[cases == m]) for name, x in stages.items()}
            for m in np.unique(cases)
        ]

        def ccfv_value() -> float:
            per_stage = ccfv_per_stage(case_list)
            diagnostics["ccfv_per_stage"] = per_stage
            return sum(per_stage.values())

        attempt("ccfv", ccfv_value)
    return {k: scores[k] for k in BASELINE_NAMES if k in scores}, diagnostics


def _stage_arrays(
    feats: NDArray[np.float64], stage_features: Mapping[str, ArrayLike] | None, n: int
) -> dict[str, NDArray[np.float64]]:
    """Validated per-stage feature arrays for CCFV, all with N rows."""
    if stage_features is None:
        return {"features": feats}
    if not stage_features:
        raise ValueError("stage_features must name at least one stage")
    out = {}
    for name, x in stage_features.items():
        arr = as_points(x, name=f"stage_features[{name!r}]")
        if arr.shape[0] != n:
            raise ValueError(f"stage_features[{name!r}] has {arr.shape[0]} rows but there are {n} points")
        out[name] = arr
    return out
