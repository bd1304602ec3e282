"""Every baseline from the shared samples of one model (metrics.md §6), with diagnostics.

For encoders without a source classifier (the self-supervised zoo) the "source" of LEEP and NCE
is the NLEEP Gaussian mixture: LEEP uses its posteriors (then equal to NLEEP) and NCE its hard
labels, the argmax of the posteriors (ties to the lower component). A model that has a source
head may pass its predictions as `source_probs` instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import ExitStack
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from transferability._validation import as_labels, as_points, check_probabilities
from transferability.baselines._common import (
    _ONE_THREAD,
    features_and_classes,
    fit_gmm,
    leep_core,
    nce_core,
    single_threaded,
)
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


MAX_WORKERS = 8
"""Threads `score_all` uses at most (the mixture has 5 components per class; more rarely help)."""


def score_all(
    features: ArrayLike,
    labels: ArrayLike,
    case_ids: ArrayLike | None = None,
    *,
    seed: int = 0,
    stage_features: Mapping[str, ArrayLike] | None = None,
    source_probs: ArrayLike | None = None,
    n_jobs: int | None = None,
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
    n_jobs : int, optional
        Threads to run the metrics (and the mixture's components) on; default the CPUs this
        process may use, at most `MAX_WORKERS`. Each thread runs single-threaded BLAS, so the
        values are bit-identical for any `n_jobs`.

    Returns
    -------
    dict of str to float
        Name -> value, higher is better for each. A metric that cannot be computed is left out;
        `score_all_with_diagnostics` says why.
    """
    return score_all_with_diagnostics(
        features, labels, case_ids, seed=seed, stage_features=stage_features, source_probs=source_probs, n_jobs=n_jobs
    )[0]


def default_jobs() -> int:
    """The CPUs this process may run on (its affinity), at most `MAX_WORKERS`."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_WORKERS))


@single_threaded
def score_all_with_diagnostics(
    features: ArrayLike,
    labels: ArrayLike,
    case_ids: ArrayLike | None = None,
    *,
    seed: int = 0,
    stage_features: Mapping[str, ArrayLike] | None = None,
    source_probs: ArrayLike | None = None,
    n_jobs: int | None = None,
) -> tuple[dict[str, float], dict[str, Any]]:
    """(scores, diagnostics) for one model's features at the shared samples.

    features: (N, D) features of the baseline stage; labels: (N,) class ids (0 = background);
    case_ids: (N,) case of each sample, needed by CCFV; stage_features: {stage: (N, D_s)} at the
    same samples for CCFV's sum over stages (default: `features` alone, as stage "features");
    source_probs: (N, Z) predictions of a source head, if the model has one; n_jobs: threads
    (see `score_all`; the result does not depend on it).

    Invalid input (NaN, shapes, a single class, N < 2) raises ValueError. A metric undefined for
    valid input (CCFV with one case, NLEEP with fewer samples than mixture components) is left
    out of the scores and its reason is recorded under diagnostics["omitted"][name].
    Diagnostics also record the source used by LEEP/NCE, the NLEEP mixture's PCA dimensions,
    EM steps and convergence, and CCFV's per-stage terms.

    Schedule: the NLEEP mixture (PCA, k-means, EM: most of the time) runs in the calling thread
    and hands its per-component work to the pool; the other metrics run on the pool beside it.
    """
    if n_jobs is not None and int(n_jobs) < 1:
        raise ValueError(f"n_jobs must be >= 1, got {n_jobs}")
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

    independent: dict[str, Callable[[], Any]] = {
        "logme": lambda: logme(feats, codes),
        "gbc": lambda: gbc(feats, codes),
        "hscore": lambda: hscore(feats, codes),
        "regularized_hscore": lambda: regularized_hscore(feats, codes),
        "transrate": lambda: transrate(feats, codes),
    }
    if cases is not None:
        case_list = [
            {name: (x[cases == m], label_ids[cases == m]) for name, x in stages.items()}
            for m in np.unique(cases)
        ]
        independent["ccfv"] = lambda: ccfv_per_stage(case_list)
    jobs = default_jobs() if n_jobs is None else int(n_jobs)
    with ExitStack() as stack:
        pool = (
            stack.enter_context(ThreadPoolExecutor(jobs, thread_name_prefix="baselines", initializer=_ONE_THREAD.pin_thread))
            if jobs > 1
            else None
        )
        pending = {name: _Outcome.submit(pool, fn) for name, fn in independent.items()}
        mixture = _Outcome.run(lambda: fit_gmm(feats, n_classes, seed, pool))
        outcomes = {name: outcome.result() for name, outcome in pending.items()}

    scores: dict[str, float] = {}
    diagnostics: dict[str, Any] = {"omitted": {}, "n_samples": n, "n_classes": n_classes}

    def record(name: str, outcome: _Outcome, value: Callable[[Any], float] = float) -> None:
        if outcome.error is not None:
            diagnostics["omitted"][name] = str(outcome.error)
            return
        try:
            number = float(value(outcome.value))
        except ValueError as err:
            diagnostics["omitted"][name] = str(err)
            return
        if not np.isfinite(number):
            diagnostics["omitted"][name] = f"non-finite value {number}"
            return
        scores[name] = number

    record("logme", outcomes["logme"])
    if mixture.error is None:
        posteriors, diagnostics["nleep_gmm"] = mixture.value
    record("nleep", mixture, lambda fit: leep_core(fit[0], codes, n_classes))
    if probs is not None:
        diagnostics["source"] = "source_probs"
        record("leep", _Outcome.run(lambda: leep_core(probs, codes, n_classes)))
        z = np.argmax(probs, axis=1)
        record("nce", _Outcome.run(lambda: nce_core(z, probs.shape[1], codes, n_classes)))
    elif "nleep" in scores:
        diagnostics["source"] = "gmm (no source head): leep equals nleep, nce uses argmax of the GMM posteriors"
        scores["leep"] = scores["nleep"]
        z = np.argmax(posteriors, axis=1)
        record("nce", _Outcome.run(lambda: nce_core(z, posteriors.shape[1], codes, n_classes)))
    else:
        reason = "no source head and the NLEEP mixture is undefined: " + str(diagnostics["omitted"].get("nleep"))
        diagnostics["omitted"]["leep"] = reason
        diagnostics["omitted"]["nce"] = reason
    for name in ("gbc", "hscore", "regularized_hscore", "transrate"):
        record(name, outcomes[name])
    if cases is None:
        diagnostics["omitted"]["ccfv"] = "no case_ids given; CCFV compares cases"
    else:
        if outcomes["ccfv"].error is None:
            diagnostics["ccfv_per_stage"] = outcomes["ccfv"].value
        record("ccfv", outcomes["ccfv"], lambda per_stage: sum(per_stage.values()))
    return {k: scores[k] for k in BASELINE_NAMES if k in scores}, diagnostics


class _Outcome:
    """A metric's value or the ValueError that says it is undefined for the input (any other
    exception propagates: it is a bug, not an omission)."""

    def __init__(self, value: Any = None, error: ValueError | None = None, future: Future[Any] | None = None) -> None:
        self.value, self.error, self._future = value, error, future

    @classmethod
    def run(cls, fn: Callable[[], Any]) -> "_Outcome":
        try:
            return cls(value=fn())
        except ValueError as err:
            return cls(error=err)

    @classmethod
    def submit(cls, pool: Executor | None, fn: Callable[[], Any]) -> "_Outcome":
        """`fn` on `pool` (resolved by `result`), or at once without one."""
        return cls.run(fn) if pool is None else cls(future=pool.submit(cls.run, fn))

    def result(self) -> "_Outcome":
        return self if self._future is None else self._future.result()


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
