"""Statistics that say what the validation data can say.

The benchmark's headline numbers (weighted tau per metric, averaged over tasks) come from a
handful of tasks, a zoo of ~10-20 encoders and a few fine-tuning seeds. This module puts error
bars and reference levels on them, so the report says how much of a difference is signal:

* how reliable the truth itself is (random-effects ANOVA over models x seeds, Spearman-Brown);
* a two-level bootstrap (tasks and models) of each metric's mean weighted tau, and of paired
  differences between metrics on the same replicates;
* a permutation p-value against task-blind random orders;
* the minimum detectable difference for a given standard error, and chance's spread on one task;
* the encoder's share of a score's variance across decoders;
* whether scores (or the truth) order a known quality ladder.

Pure, seeded, deterministic functions over plain dicts (the shapes of the committed JSON):

* ``truth[task][model] -> float`` (mean held-out Dice over seeds),
* ``dice[task][model] -> list[float]`` (per seed),
* ``scores[metric][task][model] -> float | None`` (higher is better; None/NaN = not scored).

Weighted tau is ``scipy.stats.weightedtau`` with its defaults (hyperbolic weigher, additive,
``rank=True``), exactly as ``transferability.evaluation.weighted_tau`` and
``bench.validation.analysis.agreement``; the bootstrap and permutation code evaluate the same
statistic in batches (`_weighted_tau_batch`), with agreement's rules: models without a finite score
are left out, and tau is undefined (NaN) with fewer than 3 distinct models or a constant score or
truth. Nothing here reads or writes files. Bad values raise ValueError, wrong types (a score that
is not a number, a table that is not a mapping) TypeError, each naming the offending entry.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from bench.validation.analysis import agreement

__all__ = [
    "bootstrap_mean_tau",
    "bootstrap_tau_replicates",
    "chance_sd_single_task",
    "ladder_check",
    "minimum_detectable_difference",
    "paired_differences",
    "permutation_pvalue",
    "tau_table",
    "truth_reliability",
    "variance_share",
]

MIN_MODELS = 3
"""Fewest distinct models with a finite score for a weighted tau (as in analysis.agreement)."""

_BATCH_ELEMENTS = 4_000_000
"""Cap on rows x models x models per vectorised block (memory bound of the batched tau)."""


# --------------------------------------------------------------------------------------------
# input helpers


def _as_float(value: Any, where: str) -> float:
    """A score or Dice value as float: None -> NaN; anything not a real number -> ValueError."""
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{where}: expected a number or None, got {type(value).__name__}")
    return float(value)


def _check_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _prepare(
    scores: Mapping[str, Mapping[str, Mapping[str, Any]]],
    truth: Mapping[str, Mapping[str, float]],
    tasks: Sequence[str],
    models: Sequence[str] | None,
) -> tuple[list[str], list[str], list[str], NDArray[np.float64], NDArray[np.float64]]:
    """Validate and tabulate: metrics, tasks, models, S (metrics, tasks, models), T (tasks, models).

    A model absent from a task's truth has T = NaN there (not part of that task); a metric with no
    entry for a task, or a model without a finite score, has S = NaN (left out, as in agreement).
    """
    if not isinstance(scores, Mapping) or not scores:
        raise ValueError("scores must be a non-empty mapping metric -> task -> model -> score")
    if not isinstance(truth, Mapping) or not truth:
        raise ValueError("truth must be a non-empty mapping task -> model -> mean Dice")
    if isinstance(tasks, str) or not isinstance(tasks, Sequence) or len(tasks) == 0:
        raise ValueError("tasks must be a non-empty sequence of task names")
    tasks = [str(t) for t in tasks]
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"tasks must not repeat, got {tasks}")
    unknown = [t for t in tasks if t not in truth]
    if unknown:
        raise ValueError(f"tasks without a truth: {unknown}")
    for t in tasks:
        if not isinstance(truth[t], Mapping):
            raise TypeError(f"truth[{t!r}] must be a mapping model -> mean Dice")
        for m, v in truth[t].items():
            if not math.isfinite(_as_float(v, f"truth[{t!r}][{m!r}]")):
                raise ValueError(f"truth[{t!r}][{m!r}] must be finite, got {v!r}")
    in_truth = sorted(set().union(*(truth[t].keys() for t in tasks)))
    if models is None:
        model_ids = in_truth
    else:
        if isinstance(models, str) or not isinstance(models, Sequence):
            raise ValueError("models must be a sequence of model names (or None for all)")
        model_ids = sorted({str(m) for m in models})
        missing = [m for m in model_ids if m not in in_truth]
        if missing:
            raise ValueError(f"models with no truth on any of the tasks: {missing}")
    if len(model_ids) < MIN_MODELS:
        raise ValueError(f"at least {MIN_MODELS} models are needed, got {len(model_ids)}")
    metrics = [str(k) for k in scores]
    T = np.full((len(tasks), len(model_ids)), np.nan)
    S = np.full((len(metrics), len(tasks), len(model_ids)), np.nan)
    for k, t in enumerate(tasks):
        for j, m in enumerate(model_ids):
            if m in truth[t]:
                T[k, j] = float(truth[t][m])
    for i, name in enumerate(scores):
        per_task = scores[name]
        if not isinstance(per_task, Mapping):
            raise TypeError(f"scores[{name!r}] must be a mapping task -> model -> score")
        for k, t in enumerate(tasks):
            per_model = per_task.get(t)
            if per_model is None:
                continue  # metric not run on this task: its tau there is undefined (skipped)
            if not isinstance(per_model, Mapping):
                raise TypeError(f"scores[{name!r}][{t!r}] must be a mapping model -> score")
            for j, m in enumerate(model_ids):
                if m in per_model:
                    S[i, k, j] = _as_float(per_model[m], f"scores[{name!r}][{t!r}][{m!r}]")
    S[~np.isfinite(S)] = np.nan
    return metrics, tasks, model_ids, S, T


# --------------------------------------------------------------------------------------------
# batched weighted tau (scipy.stats.weightedtau with its defaults, on many rows at once)


def _weighted_tau_ranked(x: NDArray, y: NDArray, valid: NDArray) -> tuple[NDArray, NDArray, NDArray]:
    """Numerator and the two denominators of weighted tau with ranks taken by decreasing (x, y).

    Pair (i, j) weighs 1/(1+r_i) + 1/(1+r_j) (r = 0 for the top), as in scipy's additive
    hyperbolic weigher; invalid entries are ranked last and weigh nothing.
    """
    xs = np.where(valid, x, 0.0)
    ys = np.where(valid, y, 0.0)
    order = np.lexsort((-ys, -xs, ~valid), axis=-1)  # last key is primary
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(x.shape[-1]), order.shape), axis=-1)
    w = np.where(valid, 1.0 / (1.0 + rank), 0.0)
    pair_w = (w[:, :, None] + w[:, None, :]) * (valid[:, :, None] & valid[:, None, :])
    sx = np.sign(xs[:, :, None] - xs[:, None, :])
    sy = np.sign(ys[:, :, None] - ys[:, None, :])
    # the same reduction for all three, so a score ordered exactly as the truth gives num == dx == dy
    # bit for bit and tau == 1.0 exactly
    num = (pair_w * (sx * sy)).sum(axis=(1, 2))
    dx = (pair_w * np.abs(sx)).sum(axis=(1, 2))
    dy = (pair_w * np.abs(sy)).sum(axis=(1, 2))
    return num, dx, dy


def _weighted_tau_batch(x: NDArray, y: NDArray, valid: NDArray) -> NDArray[np.float64]:
    """Weighted tau of every row of x (scores) against the same row of y (truth), over `valid`.

    Equal to ``scipy.stats.weightedtau(x[b][valid[b]], y[b][valid[b]]).statistic`` (the mean of the
    taus ranked by x and by y); ties, including duplicated models, are handled as scipy does
    (tau-b style: a pair tied on one side counts in neither the numerator nor that side's
    denominator). NaN where either side is constant. The caller enforces the 3-model minimum.
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    valid = np.asarray(valid, bool)
    rows, n = x.shape
    out = np.empty(rows)
    step = max(1, _BATCH_ELEMENTS // max(1, n * n))
    for lo in range(0, rows, step):
        sl = slice(lo, lo + step)
        n1, dx1, dy1 = _weighted_tau_ranked(x[sl], y[sl], valid[sl])
        n2, dy2, dx2 = _weighted_tau_ranked(y[sl], x[sl], valid[sl])
        with np.errstate(invalid="ignore", divide="ignore"):
            t1 = n1 / np.sqrt(dx1 * dy1)
            t2 = n2 / np.sqrt(dx2 * dy2)
        tau = 0.5 * (t1 + t2)
        tau[(dx1 <= 0) | (dy1 <= 0)] = np.nan
        out[sl] = tau
    return out


def _task_taus(
    S: NDArray, T: NDArray, index: NDArray[np.intp], constant_score_tau: float | None = None
) -> NDArray[np.float64]:
    """Weighted tau (metrics, rows, tasks) with the models of each row resampled by `index` (rows, n).

    A model drawn several times appears as tied duplicates. Tau is NaN where fewer than
    MIN_MODELS distinct models with a finite score and truth were drawn. With `constant_score_tau`,
    a row whose drawn scores are all equal while the drawn truth is not gets that value instead of
    NaN (a metric that fails to rank is then not rewarded by being left out).
    """
    n_metrics, n_tasks, n_models = S.shape
    rows = index.shape[0]
    drawn = np.zeros((rows, n_models), bool)
    np.put_along_axis(drawn, index, True, axis=-1)
    out = np.full((n_metrics, rows, n_tasks), np.nan)
    for k in range(n_tasks):
        y = T[k][index]
        for i in range(n_metrics):
            ok_model = np.isfinite(S[i, k]) & np.isfinite(T[k])
            enough = (drawn & ok_model).sum(axis=1) >= MIN_MODELS
            if not enough.any():
                continue
            x = S[i, k][index]
            valid = ok_model[index]
            tau = _weighted_tau_batch(x, y, valid)
            if constant_score_tau is not None:
                xv, yv = np.where(valid, x, np.nan), np.where(valid, y, np.nan)
                with np.errstate(invalid="ignore"):
                    flat_x = (np.nanmax(xv, axis=1) - np.nanmin(xv, axis=1)) == 0
                    varied_y = (np.nanmax(yv, axis=1) - np.nanmin(yv, axis=1)) > 0
                tau[flat_x & varied_y] = constant_score_tau
            tau[~enough] = np.nan
            out[i, :, k] = tau
    return out


def _finite_mean(values: NDArray, weights: NDArray, axis: int = -1) -> NDArray[np.float64]:
    """Weighted mean over `axis` of the finite entries (NaN where none)."""
    ok = np.isfinite(values)
    w = np.where(ok, weights, 0.0)
    total = w.sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (np.where(ok, values, 0.0) * w).sum(axis=axis) / total
    return np.where(total > 0, mean, np.nan)


# --------------------------------------------------------------------------------------------
# one-way random-effects ANOVA (truth reliability, variance share)


def _one_way_anova(groups: Sequence[NDArray[np.float64]]) -> dict[str, float]:
    """MSB, MSW, n0 and the variance components of a one-way random-effects ANOVA.

    Unequal group sizes use the usual effective group size
    n0 = (N - sum(n_i^2) / N) / (a - 1), which is n when every group has n observations.
    """
    a = len(groups)
    sizes = np.asarray([g.size for g in groups], np.float64)
    N = float(sizes.sum())
    grand = float(np.concatenate(groups).mean())
    means = np.asarray([g.mean() for g in groups])
    ssb = float(np.sum(sizes * (means - grand) ** 2))
    ssw = float(sum(np.sum((g - g.mean()) ** 2) for g in groups))
    df_b, df_w = a - 1, N - a
    msb, msw = ssb / df_b, ssw / df_w
    n0 = (N - float(np.sum(sizes**2)) / N) / df_b
    var_between = (msb - msw) / n0
    if msw > 0:
        f = msb / msw
        p = float(stats.f.sf(f, df_b, df_w))
    else:
        f = math.inf if msb > 0 else math.nan
        p = 0.0 if msb > 0 else math.nan
    return {
        "msb": msb, "msw": msw, "df_between": float(df_b), "df_within": float(df_w), "n0": n0,
        "var_between": var_between, "var_within": msw, "f": f, "p_value": p,
    }


def _groups(values: Mapping[str, Any], what: str, inner: str) -> list[NDArray[np.float64]]:
    """Finite values per group from {group: sequence | mapping}; groups with no value are dropped."""
    if not isinstance(values, Mapping) or not values:
        raise ValueError(f"{what} must be a non-empty mapping model -> {inner}")
    out = []
    for m, v in values.items():
        items = v.values() if isinstance(v, Mapping) else v
        if isinstance(items, str) or not hasattr(items, "__iter__"):
            raise TypeError(f"{what}[{m!r}] must be a sequence or mapping of {inner}")
        a = np.asarray([_as_float(x, f"{what}[{m!r}]") for x in items], np.float64)
        a = a[np.isfinite(a)]
        if a.size:
            out.append(a)
    if len(out) < 2:
        raise ValueError(f"{what}: at least two models with a finite value are needed, got {len(out)}")
    if sum(g.size for g in out) <= len(out):
        raise ValueError(f"{what}: at least one model needs two or more {inner} (no within-model variance otherwise)")
    return out


def truth_reliability(dice_by_seed: Mapping[str, Sequence[float]], *, target: float = 0.8) -> dict[str, Any]:
    """Reliability of one task's truth (mean Dice per model) from its seed-to-seed noise.

    One-way random-effects ANOVA with models as groups and seeds as replicates. The reliability
    of the model MEANS is ICC(1,k) = (MSB - MSW) / MSB: the share of the variance of the model means
    that is true between-model difference, i.e. how far the truth's ranking would reproduce with a
    fresh set of seeds. Spearman-Brown then says how many seeds would give `target` reliability.

    Parameters
    ----------
    dice_by_seed : mapping of model id to sequence of float
        Held-out Dice per fine-tuning seed. Non-finite values are dropped; unequal seed counts are
        allowed (the effective seeds per model, n0, replaces k; n0 = k when balanced).
    target : float, default 0.8
        Reliability of the model means to project the number of seeds for, in (0, 1).

    Returns
    -------
    dict
        ``n_models``, ``n_obs``, ``n0`` (effective seeds per model), ``balanced``;
        ``msb``, ``msw``, ``f``, ``p_value`` (F-test of any model difference);
        ``var_between`` (sigma^2 of the models, raw: may be negative) and ``var_within`` (seed noise);
        ``icc1_raw`` / ``icc1``: reliability of ONE seed, (MSB-MSW) / (MSB + (n0-1) MSW);
        ``icck_raw`` / ``icck``: reliability of the model means, (MSB-MSW) / MSB.
        The ``*_raw`` values are the unclipped estimators (negative when MSB < MSW, -inf when the
        means are all equal but the seeds are not); the plain ones are clipped to [0, 1].
        NaN when every value is equal (nothing to rank). ``seeds_needed``: Spearman-Brown
        projection target (1 - icc1) / (icc1 (1 - target)) from the unclipped icc1 (may be below 1;
        inf when icc1 <= 0); ``seeds_needed_int``: it rounded up, at least 1 (None if infinite).
    """
    if not (isinstance(target, int | float) and 0 < target < 1):
        raise ValueError(f"target must be in (0, 1), got {target!r}")
    groups = _groups(dice_by_seed, "dice_by_seed", "seed values")
    a = _one_way_anova(groups)
    msb, msw, n0 = a["msb"], a["msw"], a["n0"]
    if msb > 0:
        icck_raw = (msb - msw) / msb
        icc1_raw = (msb - msw) / (msb + (n0 - 1.0) * msw)
    elif msw > 0:
        icck_raw, icc1_raw = -math.inf, (msb - msw) / (msb + (n0 - 1.0) * msw)
    else:
        icck_raw = icc1_raw = math.nan
    if math.isfinite(icc1_raw) and icc1_raw > 0:
        seeds = target * (1.0 - icc1_raw) / (icc1_raw * (1.0 - target))
        seeds_int: int | None = max(1, math.ceil(seeds - 1e-9))
    elif math.isnan(icc1_raw):
        seeds, seeds_int = math.nan, None
    else:
        seeds, seeds_int = math.inf, None
    sizes = {g.size for g in groups}
    return {
        "n_models": len(groups),
        "n_obs": int(sum(g.size for g in groups)),
        "n0": n0,
        "balanced": len(sizes) == 1,
        "msb": msb,
        "msw": msw,
        "f": a["f"],
        "p_value": a["p_value"],
        "var_between": a["var_between"],
        "var_within": a["var_within"],
        "icc1_raw": icc1_raw,
        "icc1": _clip01(icc1_raw),
        "icck_raw": icck_raw,
        "icck": _clip01(icck_raw),
        "target": float(target),
        "seeds_needed": seeds,
        "seeds_needed_int": seeds_int,
    }


def _clip01(v: float) -> float:
    return v if math.isnan(v) else min(1.0, max(0.0, v))


def variance_share(values: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The encoder's share of a score's variance across decoders.

    Random-effects ANOVA with decoders nested in models: share = sigma^2_model /
    (sigma^2_model + sigma^2_decoder-within-model). 1 means the score depends on the encoder only,
    0 that the decoder choice moves it as much as changing the encoder does. (The decoders are
    treated as replicates within each model: a decoder main effect shared by all models counts as
    within-model variance.)

    Parameters
    ----------
    values : mapping model -> mapping decoder -> float
        Missing (None/NaN) entries are dropped; models left with no value are dropped.

    Returns
    -------
    dict
        ``var_model_raw`` (may be negative), ``var_model`` (clipped at 0), ``var_decoder``
        (within-model), ``share_raw`` = var_model_raw / (var_model_raw + var_decoder) (may fall
        outside [0, 1]), ``share`` = var_model / (var_model + var_decoder) in [0, 1] (NaN when all
        values are equal), ``n_models``, ``n_obs``, ``n0`` (effective decoders per model), ``f``,
        ``p_value``.
    """
    if isinstance(values, Mapping):
        for m, v in values.items():
            if not isinstance(v, Mapping):
                raise TypeError(f"values[{m!r}] must be a mapping decoder -> value")
    groups = _groups(values, "values", "decoder values")
    a = _one_way_anova(groups)
    vb_raw, vw = a["var_between"], a["var_within"]
    vb = max(0.0, vb_raw)
    with np.errstate(invalid="ignore", divide="ignore"):
        share_raw = vb_raw / (vb_raw + vw) if (vb_raw + vw) != 0 else math.nan
        share = vb / (vb + vw) if (vb + vw) > 0 else math.nan
    return {
        "var_model_raw": vb_raw,
        "var_model": vb,
        "var_decoder": vw,
        "share_raw": share_raw,
        "share": share,
        "n_models": len(groups),
        "n_obs": int(sum(g.size for g in groups)),
        "n0": a["n0"],
        "f": a["f"],
        "p_value": a["p_value"],
    }


# --------------------------------------------------------------------------------------------
# agreement with the truth, with error bars


def tau_table(
    scores: Mapping[str, Mapping[str, Mapping[str, Any]]], truth: Mapping[str, Mapping[str, float]]
) -> dict[str, dict[str, float]]:
    """Weighted tau of every metric on every task it was scored on (``analysis.agreement``).

    Parameters
    ----------
    scores : mapping metric -> task -> model -> score (higher is better; None/NaN = not scored)
    truth : mapping task -> model -> mean Dice

    Returns
    -------
    dict
        metric -> task -> weighted tau (NaN where undefined: < 3 models, constant score or truth).
    """
    if not isinstance(scores, Mapping) or not isinstance(truth, Mapping):
        raise TypeError("scores and truth must be mappings (metric -> task -> model, task -> model)")
    out: dict[str, dict[str, float]] = {}
    for name, per_task in scores.items():
        if not isinstance(per_task, Mapping):
            raise TypeError(f"scores[{name!r}] must be a mapping task -> model -> score")
        unknown = [t for t in per_task if t not in truth]
        if unknown:
            raise ValueError(f"scores[{name!r}] has tasks without a truth: {unknown}")
        row = {}
        for t, per_model in per_task.items():
            clean = {m: _as_float(v, f"scores[{name!r}][{t!r}][{m!r}]") for m, v in per_model.items()}
            row[t] = float(agreement(clean, truth[t])["weighted_tau"])
        out[str(name)] = row
    return out


def bootstrap_tau_replicates(
    scores: Mapping[str, Mapping[str, Mapping[str, Any]]],
    truth: Mapping[str, Mapping[str, float]],
    tasks: Sequence[str],
    models: Sequence[str] | None = None,
    *,
    n_boot: int = 2000,
    seed: int = 0,
    constant_score_tau: float | None = None,
) -> dict[str, Any]:
    """The two-level bootstrap replicates of every metric's mean weighted tau over `tasks`.

    Each replicate draws the tasks with replacement and, once, the models with replacement (one
    model draw shared by every task and metric of the replicate, since the zoo is shared); every
    metric's weighted tau is recomputed on the drawn models (a model drawn twice is a tied
    duplicate, which weighted tau handles as scipy does) and averaged over the drawn tasks. All
    metrics see the same replicates, so paired comparisons are coherent. A task where a metric's
    tau is undefined in a replicate (fewer than 3 distinct drawn models with a finite score, or a
    constant score or truth among them) is skipped for that metric in that replicate; a replicate
    where it is undefined on every drawn task is NaN.

    Parameters
    ----------
    scores : mapping metric -> task -> model -> score (higher is better; None/NaN = not scored)
    truth : mapping task -> model -> mean Dice (finite)
    tasks : sequence of str
        The tasks to average over (each must have a truth).
    models : sequence of str, optional
        Restrict to these models (default: every model with a truth on any of `tasks`).
    n_boot : int, default 2000
    seed : int, default 0
        The replicates depend only on (seed, n_boot, number of models, number of tasks), not on the
        metrics: the same call with other metrics draws the same replicates.
    constant_score_tau : float, optional
        The tau of a metric whose (drawn) scores are all equal on a task whose truth is not: None
        (default) leaves it undefined and skipped; the method study counts it 0.

    Returns
    -------
    dict
        ``metrics`` (names, in input order), ``tasks``, ``models`` (sorted), ``observed``
        (metric -> mean tau over the tasks where it is defined), ``n_tasks`` (metric -> that
        number of tasks), ``task_taus`` (metric -> task -> observed tau, NaN where undefined),
        ``replicates`` (metric -> float array of n_boot replicate means, NaN where undefined).
    """
    n_boot = _check_int(n_boot, "n_boot", 1)
    seed = _check_seed(seed)
    metrics, tasks, model_ids, S, T = _prepare(scores, truth, tasks, models)
    n_tasks, n_models = T.shape
    rng = np.random.default_rng([seed, n_models, n_tasks])
    model_idx = rng.integers(0, n_models, size=(n_boot, n_models))
    task_idx = rng.integers(0, n_tasks, size=(n_boot, n_tasks))
    task_counts = np.zeros((n_boot, n_tasks))
    np.add.at(task_counts, (np.arange(n_boot)[:, None], task_idx), 1.0)

    observed_taus = _task_taus(S, T, np.arange(n_models)[None, :], constant_score_tau)[:, 0, :]  # (metrics, tasks)
    taus = _task_taus(S, T, model_idx, constant_score_tau)  # (metrics, n_boot, tasks)
    reps = _finite_mean(taus, task_counts[None, :, :], axis=-1)  # (metrics, n_boot)
    observed = _finite_mean(observed_taus, np.ones(n_tasks), axis=-1)
    return {
        "metrics": metrics,
        "tasks": tasks,
        "models": model_ids,
        "observed": {m: float(observed[i]) for i, m in enumerate(metrics)},
        "task_taus": {m: dict(zip(tasks, map(float, observed_taus[i]))) for i, m in enumerate(metrics)},
        "n_tasks": {m: int(np.isfinite(observed_taus[i]).sum()) for i, m in enumerate(metrics)},
        "replicates": {m: reps[i] for i, m in enumerate(metrics)},
    }


def _interval(values: NDArray[np.float64]) -> tuple[float, float, float, int]:
    """95 % percentile interval, bootstrap SE (ddof=1) and count of the finite replicates."""
    v = values[np.isfinite(values)]
    if v.size == 0:
        return math.nan, math.nan, math.nan, 0
    lo, hi = np.quantile(v, [0.025, 0.975])
    se = float(v.std(ddof=1)) if v.size > 1 else math.nan
    return float(lo), float(hi), se, int(v.size)


def bootstrap_mean_tau(
    scores: Mapping[str, Mapping[str, Mapping[str, Any]]],
    truth: Mapping[str, Mapping[str, float]],
    tasks: Sequence[str],
    models: Sequence[str] | None = None,
    *,
    n_boot: int = 2000,
    seed: int = 0,
    constant_score_tau: float | None = None,
) -> dict[str, dict[str, Any]]:
    """Mean weighted tau over `tasks` per metric, with its two-level bootstrap 95 % interval.

    The interval reflects both which tasks were run and which encoders are in the zoo (see
    `bootstrap_tau_replicates` for the resampling and the rule for undefined taus).

    Parameters
    ----------
    scores, truth, tasks, models, n_boot, seed, constant_score_tau
        As in `bootstrap_tau_replicates`.

    Returns
    -------
    dict
        metric -> {``mean`` (observed mean tau over the tasks where defined), ``lo``, ``hi``
        (2.5 and 97.5 percentiles of the replicate means), ``se`` (their std, ddof=1),
        ``n_tasks`` (tasks with a defined observed tau), ``n_boot`` (finite replicates),
        ``replicates`` (the array of replicate means, for further paired use)}.
    """
    rep = bootstrap_tau_replicates(scores, truth, tasks, models, n_boot=n_boot, seed=seed, constant_score_tau=constant_score_tau)
    out = {}
    for m in rep["metrics"]:
        lo, hi, se, n_ok = _interval(rep["replicates"][m])
        out[m] = {
            "mean": rep["observed"][m], "lo": lo, "hi": hi, "se": se, "n_tasks": rep["n_tasks"][m],
            "n_boot": n_ok, "replicates": rep["replicates"][m],
        }
    return out


def paired_differences(
    scores: Mapping[str, Mapping[str, Mapping[str, Any]]],
    truth: Mapping[str, Mapping[str, float]],
    tasks: Sequence[str],
    pairs: Sequence[tuple[str, str]],
    *,
    models: Sequence[str] | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    constant_score_tau: float | None = None,
) -> dict[tuple[str, str], dict[str, float]]:
    """Mean tau(a) - mean tau(b) for metric pairs, on the SAME two-level bootstrap replicates.

    Because both metrics are recomputed on the same drawn tasks and models in each replicate, the
    shared difficulty of a task or a zoo cancels and the interval is that of the difference.

    Parameters
    ----------
    scores, truth, tasks, models, n_boot, seed, constant_score_tau
        As in `bootstrap_tau_replicates` (the same seed gives the replicates of
        `bootstrap_mean_tau`).
    pairs : sequence of (metric a, metric b)

    Returns
    -------
    dict
        (a, b) -> {``diff`` (observed mean tau(a) - mean tau(b)), ``lo``, ``hi`` (95 % percentile
        interval of the replicate differences), ``se``, ``p_boot``, ``n_boot``}. ``p_boot`` is the
        two-sided percentile-bootstrap p-value for "no difference":
        min(1, 2 (1 + min(#{d* <= 0}, #{d* >= 0})) / (1 + B)) over the B replicates d* where both
        means are defined (1 for a metric against itself). Each metric skips the tasks where its tau
        is undefined, so in a replicate the two means may cover different tasks when scores are
        missing.
    """
    if isinstance(pairs, str) or not isinstance(pairs, Sequence) or len(pairs) == 0:
        raise ValueError("pairs must be a non-empty sequence of (metric a, metric b)")
    for p in pairs:
        if isinstance(p, str) or not isinstance(p, Sequence) or len(p) != 2:
            raise ValueError(f"each pair must be (metric a, metric b), got {p!r}")
        missing = [x for x in p if x not in scores]
        if missing:
            raise ValueError(f"pair {tuple(p)!r} names metrics without scores: {missing}")
    rep = bootstrap_tau_replicates(scores, truth, tasks, models, n_boot=n_boot, seed=seed, constant_score_tau=constant_score_tau)
    out: dict[tuple[str, str], dict[str, float]] = {}
    for a, b in pairs:
        a, b = str(a), str(b)
        d = rep["replicates"][a] - rep["replicates"][b]
        lo, hi, se, n_ok = _interval(d)
        d = d[np.isfinite(d)]
        if n_ok:
            tail = min(int(np.sum(d <= 0)), int(np.sum(d >= 0)))
            p = min(1.0, 2.0 * (1 + tail) / (1 + n_ok))
        else:
            p = math.nan
        out[(a, b)] = {
            "diff": rep["observed"][a] - rep["observed"][b], "lo": lo, "hi": hi, "se": se,
            "p_boot": p, "n_boot": n_ok,
        }
    return out


def permutation_pvalue(
    scores: Mapping[str, Mapping[str, Mapping[str, Any]]],
    truth: Mapping[str, Mapping[str, float]],
    tasks: Sequence[str],
    models: Sequence[str] | None = None,
    *,
    draws: int = 2000,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """One-sided p-value of each metric's mean weighted tau against task-blind random orders.

    Each null draw is ONE random ordering of the models, used as the score on every task (as
    ``analysis.chance_weighted_tau`` does: a metric that knows nothing about the task still ranks
    the same zoo the same way everywhere, so correlated truths widen the null as they should).
    The null mean is taken over the same tasks and the same scored models as the metric (models
    the metric could not score are left out of the null too).

    Parameters
    ----------
    scores, truth, tasks, models
        As in `bootstrap_tau_replicates`.
    draws : int, default 2000
    seed : int, default 0

    Returns
    -------
    dict
        metric -> {``observed`` (mean tau over the tasks where defined), ``p`` =
        (1 + #{null >= observed}) / (1 + draws) (null means within 1e-12 of the observed count as
        reaching it), ``null_lo95``, ``null_hi95`` (central 95 % of the null), ``draws``}.
        NaN where the metric's tau is undefined on every task.
    """
    draws = _check_int(draws, "draws", 1)
    seed = _check_seed(seed)
    metrics, tasks, _ids, S, T = _prepare(scores, truth, tasks, models)
    n_tasks, n_models = T.shape
    rng = np.random.default_rng([seed, n_models, n_tasks])
    orders = rng.permuted(np.tile(np.arange(n_models, dtype=np.float64), (draws, 1)), axis=1)
    identity = np.arange(n_models)[None, :]
    observed = _finite_mean(_task_taus(S, T, identity)[:, 0, :], np.ones(n_tasks), axis=-1)
    cache: dict[bytes, NDArray[np.float64]] = {}
    out = {}
    for i, m in enumerate(metrics):
        scored = np.isfinite(S[i])  # (tasks, models): the null leaves out what the metric left out
        key = scored.tobytes()
        if key not in cache:
            null_scores = np.where(scored[None, :, :], orders[:, None, :], np.nan)  # (draws, tasks, models)
            taus = np.stack([_null_task(null_scores[:, k, :], T[k]) for k in range(n_tasks)], axis=-1)
            cache[key] = _finite_mean(taus, np.ones(n_tasks), axis=-1)
        null = cache[key]
        obs = float(observed[i])
        ok = null[np.isfinite(null)]
        if not math.isfinite(obs) or ok.size == 0:
            out[m] = {"observed": obs, "p": math.nan, "null_lo95": math.nan, "null_hi95": math.nan, "draws": draws}
            continue
        p = (1 + int(np.sum(ok >= obs - 1e-12))) / (1 + ok.size)
        lo, hi = np.quantile(ok, [0.025, 0.975])
        out[m] = {"observed": obs, "p": float(p), "null_lo95": float(lo), "null_hi95": float(hi), "draws": draws}
    return out


def _null_task(x: NDArray[np.float64], t: NDArray[np.float64]) -> NDArray[np.float64]:
    """Weighted tau of each row of x (random orders, NaN = unscored) against one task's truth t."""
    ok = np.isfinite(x) & np.isfinite(t)[None, :]
    tau = _weighted_tau_batch(x, np.broadcast_to(t, x.shape), ok)
    tau[ok.sum(axis=1) < MIN_MODELS] = np.nan
    return tau


# --------------------------------------------------------------------------------------------
# reference levels


def minimum_detectable_difference(se_of_difference: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true difference a two-sided test at `alpha` detects with probability `power`.

    (z_{1-alpha/2} + z_{power}) x SE; 2.8016 x SE for the defaults. Use the bootstrap SE of a
    paired difference to say which gaps between metrics this benchmark can resolve.

    Parameters
    ----------
    se_of_difference : float
        Standard error of the difference (finite, >= 0).
    alpha : float, default 0.05
        Two-sided significance level, in (0, 1).
    power : float, default 0.8
        In (0, 1).

    Returns
    -------
    float
    """
    se = _as_float(se_of_difference, "se_of_difference")
    if not math.isfinite(se) or se < 0:
        raise ValueError(f"se_of_difference must be finite and >= 0, got {se_of_difference!r}")
    for name, v in (("alpha", alpha), ("power", power)):
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v < 1:
            raise ValueError(f"{name} must be in (0, 1), got {v!r}")
    z = float(stats.norm.ppf(1.0 - alpha / 2.0) + stats.norm.ppf(power))
    return z * se


def chance_sd_single_task(n_models: int, *, draws: int = 20000, seed: int = 0) -> float:
    """Standard deviation of weighted tau between a random ordering and a fixed strict truth.

    What chance alone spreads a single task's tau by: "with 14 models, chance SD of tau on one task
    is ...". Simulated with `draws` random orderings, seeded.

    Parameters
    ----------
    n_models : int
        At least 3.
    draws : int, default 20000
    seed : int, default 0

    Returns
    -------
    float
        Sample SD (ddof=1) of the simulated taus.
    """
    n = _check_int(n_models, "n_models", MIN_MODELS)
    draws = _check_int(draws, "draws", 2)
    seed = _check_seed(seed)
    rng = np.random.default_rng([seed, n])
    x = rng.permuted(np.tile(np.arange(n, dtype=np.float64), (draws, 1)), axis=1)
    y = np.broadcast_to(np.arange(n, dtype=np.float64), x.shape)
    tau = _weighted_tau_batch(x, y, np.ones(x.shape, bool))
    return float(tau.std(ddof=1))


def ladder_check(scores_by_model: Mapping[str, Any], ladder: Sequence[str]) -> dict[str, Any]:
    """Whether scores order a ladder of models known best -> worst (e.g. base, r25, r50, r75).

    A sanity check with a known answer: degrading an encoder step by step must not raise its score.
    Works the same on a truth dict (does the fine-tuned Dice order the ladder?).

    Parameters
    ----------
    scores_by_model : mapping model -> float
        Higher is better. Ladder models without a finite value are left out (listed in ``missing``).
    ladder : sequence of str
        Distinct model names, best first (at least two).

    Returns
    -------
    dict
        ``frac_correct``: share of the C(n, 2) ladder pairs the scores order correctly (a tie
        counts half); ``kendall_tau``: Kendall tau-b of the scores against the known order (NaN if
        all scores tie); ``fully_correct``: every pair strictly in order; ``n_pairs``,
        ``n_models``, ``missing``. NaN fractions and False with fewer than two models present.
    """
    if not isinstance(scores_by_model, Mapping):
        raise TypeError("scores_by_model must be a mapping model -> score")
    if isinstance(ladder, str) or not isinstance(ladder, Sequence) or len(ladder) < 2:
        raise ValueError("ladder must be a sequence of at least two model names, best first")
    if len(set(ladder)) != len(ladder):
        raise ValueError(f"ladder must not repeat a model, got {list(ladder)}")
    vals = {m: _as_float(scores_by_model.get(m), f"scores_by_model[{m!r}]") for m in ladder}
    present = [m for m in ladder if math.isfinite(vals[m])]
    missing = [m for m in ladder if m not in present]
    n = len(present)
    if n < 2:
        return {"frac_correct": math.nan, "kendall_tau": math.nan, "fully_correct": False, "n_pairs": 0,
                "n_models": n, "missing": missing}
    v = np.asarray([vals[m] for m in present])
    i, j = np.triu_indices(n, k=1)  # i is the better model of each pair
    correct = np.where(v[i] > v[j], 1.0, np.where(v[i] == v[j], 0.5, 0.0))
    if np.ptp(v) == 0:
        kt = math.nan
    else:
        kt = float(stats.kendalltau(v, -np.arange(n), variant="b").statistic)
    return {
        "frac_correct": float(correct.mean()),
        "kendall_tau": kt,
        "fully_correct": bool(np.all(v[i] > v[j])),
        "n_pairs": int(i.size),
        "n_models": n,
        "missing": missing,
    }
