"""The benchmark's numbers from its raw results: truth, its reproducibility, weighted tau per metric.

Pure functions over plain dicts (model id -> value), so the report can be recomputed from the
committed JSON alone. Every score is higher-is-better (metrics.md §7); weighted tau is
`transferability.evaluation.weighted_tau`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

from transferability.evaluation import kendall_tau, top1_regret, weighted_tau
from transferability.fusion import fuse

INFORMATIVE_SPLIT_HALF_TAU = 0.5
"""A task whose truth has a split-half Kendall tau below this is uninformative (the issue's rule)."""

LABEL_BLIND_EFFECT = 0.25
"""A metric whose mean standardised move under shuffled labels is below this is reported label-blind."""


def truth_summary(dice_by_seed: Mapping[str, Sequence[float]]) -> dict[str, dict[str, float]]:
    """Per model: mean and sample std (ddof=1) of held-out Dice over the seeds."""
    out = {}
    for m, v in dice_by_seed.items():
        a = np.asarray(v, np.float64)
        out[m] = {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if a.size > 1 else float("nan"), "n": int(a.size)}
    return out


def split_half_tau(dice_by_seed: Mapping[str, Sequence[float]]) -> dict[str, Any]:
    """Kendall tau-b between the model rankings of two disjoint halves of the seeds.

    With S seeds, every split into floor(S/2) vs the rest is taken (for S = 3: each seed against
    the mean of the other two) and the taus are averaged; the spread is reported too.
    """
    models = sorted(dice_by_seed)
    mat = np.asarray([dice_by_seed[m] for m in models], np.float64)  # (models, seeds)
    n_seeds = mat.shape[1]
    if n_seeds < 2 or len(models) < 2:
        return {"tau": float("nan"), "splits": 0, "min": float("nan"), "max": float("nan")}
    half = n_seeds // 2
    taus = []
    for first in itertools.combinations(range(n_seeds), half):
        rest = [s for s in range(n_seeds) if s not in first]
        if n_seeds % 2 == 0 and first > tuple(rest):
            continue  # each unordered split once
        a = mat[:, list(first)].mean(axis=1)
        b = mat[:, rest].mean(axis=1)
        t = stats.kendalltau(a, b).statistic
        taus.append(0.0 if not np.isfinite(t) else float(t))
    return {"tau": float(np.mean(taus)), "splits": len(taus), "min": float(np.min(taus)), "max": float(np.max(taus))}


def spread_to_noise(dice_by_seed: Mapping[str, Sequence[float]]) -> float:
    """Between-model spread (std of the model means) over the mean within-model seed std."""
    summ = truth_summary(dice_by_seed)
    means = np.asarray([s["mean"] for s in summ.values()])
    stds = np.asarray([s["std"] for s in summ.values()])
    noise = float(np.nanmean(stds)) if np.any(np.isfinite(stds)) else float("nan")
    spread = float(means.std(ddof=1)) if means.size > 1 else float("nan")
    return spread / noise if noise and noise > 0 else float("inf") if spread > 0 else float("nan")


def reproducibility(dice_by_seed: Mapping[str, Sequence[float]]) -> dict[str, Any]:
    """Split-half tau, spread / noise and the informative verdict of one task's truth."""
    sh = split_half_tau(dice_by_seed)
    ratio = spread_to_noise(dice_by_seed)
    summ = truth_summary(dice_by_seed)
    means = [s["mean"] for s in summ.values()]
    return {
        "split_half_tau": sh["tau"],
        "split_half_min": sh["min"],
        "split_half_max": sh["max"],
        "splits": sh["splits"],
        "spread_over_noise": ratio,
        "dice_range": [float(min(means)), float(max(means))],
        "mean_seed_std": float(np.nanmean([s["std"] for s in summ.values()])),
        "informative": bool(np.isfinite(sh["tau"]) and sh["tau"] >= INFORMATIVE_SPLIT_HALF_TAU),
    }


def fused_scores(grtd: Mapping[str, float], lbtc: Mapping[str, float], k: int) -> dict[str, float]:
    """The task-adaptive fused score of every model (metrics.md §5), zoo-relative."""
    res = fuse({m: (grtd[m], lbtc[m]) for m in grtd}, k)
    return {str(m.model_id): m.score for m in res.models}


def agreement(scores: Mapping[str, float], truth: Mapping[str, float]) -> dict[str, float]:
    """Weighted tau, Kendall tau-b and top-1 regret of one metric against the truth means.

    Models whose score is missing or not finite are left out (and counted).
    """
    ids = sorted(m for m in truth if m in scores and scores[m] is not None and math.isfinite(scores[m]))
    if len(ids) < 3:
        return {"weighted_tau": float("nan"), "kendall_tau": float("nan"), "top1_regret": float("nan"), "n_models": len(ids)}
    s = np.asarray([scores[m] for m in ids], np.float64)
    t = np.asarray([truth[m] for m in ids], np.float64)
    if np.ptp(s) == 0:
        wt = kt = float("nan")
    else:
        wt, kt = weighted_tau(s, t), kendall_tau(s, t)
    return {"weighted_tau": wt, "kendall_tau": kt, "top1_regret": top1_regret(s, t), "n_models": len(ids)}


def chance_weighted_tau(truths: Sequence[Mapping[str, float]], *, draws: int = 2000, seed: int = 0) -> dict[str, float]:
    """What a metric that knows nothing scores: the null distribution of the mean weighted tau over
    the tasks `truths` (model -> mean Dice each) when the scores are a random ordering of the models,
    the same ordering on every task (as a task-blind metric's would be), so correlation between the
    tasks' truths widens the range as it should. Seeded, so the report is repeatable. A mean inside
    the central 95 % is no evidence of skill."""
    models = sorted(set().union(*truths)) if truths else []
    nan = {"n_models": len(models), "n_tasks": len(truths), "lo95": float("nan"), "hi95": float("nan"), "std": float("nan")}
    if len(models) < 3 or not truths:
        return nan
    rng = np.random.default_rng([seed, len(models), len(truths)])
    means = np.empty(draws)
    for i in range(draws):
        order = rng.permutation(len(models)).astype(np.float64)
        score = dict(zip(models, order))
        means[i] = mean_finite([agreement(score, t)["weighted_tau"] for t in truths])  # a constant truth has no tau, as in the averages
    if not np.all(np.isfinite(means)):
        return nan  # no task with a rankable truth
    lo, hi = np.quantile(means, [0.025, 0.975])
    return {**nan, "lo95": float(lo), "hi95": float(hi), "std": float(means.std())}


def mean_finite(values: Sequence[float]) -> float:
    got = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(got)) if got else float("nan")


def permutation_effect(true: Mapping[str, float], shuffled: Mapping[str, float]) -> dict[str, float]:
    """How far a metric moves when the labels are shuffled, on one task's zoo.

    `effect` = mean over models of (true - shuffled) divided by the between-model std of the true
    values (so a move is measured against the differences the metric is meant to rank);
    `frac_true_higher` = share of models scoring higher with their true labels.
    """
    ids = sorted(m for m in true if m in shuffled and all(math.isfinite(x) for x in (true[m], shuffled[m])))
    if len(ids) < 2:
        return {"effect": float("nan"), "frac_true_higher": float("nan"), "mean_abs_move": float("nan"), "n_models": len(ids)}
    t = np.asarray([true[m] for m in ids])
    s = np.asarray([shuffled[m] for m in ids])
    spread = float(t.std(ddof=1))
    d = t - s
    return {
        "effect": float(d.mean() / spread) if spread > 0 else float("nan"),
        "frac_true_higher": float(np.mean(d > 0)),
        "mean_abs_move": float(np.abs(d).mean()),
        "between_model_std": spread,
        "n_models": len(ids),
    }
