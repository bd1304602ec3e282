"""Ranking agreement between a transferability metric and fine-tuned truth (metrics.md §7).

All metrics are higher-is-better: negate a lower-is-better metric before calling. Scores and
truth are aligned arrays, or mappings keyed by model id (aligned by sorted id).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from transferability.fusion import fuse


def _pair(scores: ArrayLike, truth: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Validate two aligned 1-D finite float arrays with at least two models."""
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(truth, dtype=np.float64)
    if s.ndim != 1 or t.ndim != 1:
        raise ValueError(f"scores and truth must be 1-D, got shapes {s.shape} and {t.shape}")
    if s.shape != t.shape:
        raise ValueError(f"scores ({s.size}) and truth ({t.size}) must have the same length")
    if s.size < 2:
        raise ValueError("at least two models are needed to compare rankings")
    if not (np.all(np.isfinite(s)) and np.all(np.isfinite(t))):
        raise ValueError("scores and truth must be finite (no NaN or inf)")
    return s, t


def weighted_tau(scores: ArrayLike, truth: ArrayLike) -> float:
    """`scipy.stats.weightedtau(scores, truth)` with its defaults (hyperbolic weigher, rank=True)."""
    s, t = _pair(scores, truth)
    return float(stats.weightedtau(s, t).statistic)


def kendall_tau(scores: ArrayLike, truth: ArrayLike) -> float:
    """Kendall's tau-b (NaN when either side is constant)."""
    s, t = _pair(scores, truth)
    return float(stats.kendalltau(s, t, variant="b").statistic)


def spearman(scores: ArrayLike, truth: ArrayLike) -> float:
    """Spearman's rho (NaN when either side is constant)."""
    s, t = _pair(scores, truth)
    if np.all(s == s[0]) or np.all(t == t[0]):
        return math.nan  # scipy warns and returns NaN; say it without the warning
    return float(stats.spearmanr(s, t).statistic)


def top1_regret(scores: ArrayLike, truth: ArrayLike) -> float:
    """Best truth minus the truth of the top-scored model (first position among tied top scores)."""
    s, t = _pair(scores, truth)
    return float(t.max() - t[int(np.argmax(s))])


@dataclass(frozen=True)
class EvaluationRow:
    """Agreement of one metric's ranking with the truth; NaN (None in to_dict) where undefined."""

    metric: str
    n_models: int
    weighted_tau: float
    kendall_tau: float
    spearman: float
    top1_regret: float


@dataclass(frozen=True)
class EvaluationTable:
    """One row per metric, in the order the metrics were given."""

    rows: list[EvaluationRow]

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly view: NaN becomes None."""
        def clean(row: EvaluationRow) -> dict[str, Any]:
            return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(row).items()}

        return {"rows": [clean(r) for r in self.rows]}

    def row(self, metric: str) -> EvaluationRow:
        """The row of `metric` (KeyError if absent)."""
        for r in self.rows:
            if r.metric == metric:
                return r
        raise KeyError(metric)


def _align(
    scores: Mapping[Hashable, float] | ArrayLike, truth: Mapping[Hashable, float] | ArrayLike, metric: str
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    if isinstance(truth, Mapping) != isinstance(scores, Mapping):
        raise ValueError(f"{metric}: scores and truth must both be mappings (by model id) or both arrays")
    if isinstance(truth, Mapping):
        if set(scores) != set(truth):
            raise ValueError(f"{metric}: scored models differ from the models with a truth value")
        try:
            ids = sorted(truth)
        except TypeError as exc:
            raise ValueError("model ids must be mutually comparable (e.g. all str)") from exc
        return _pair([scores[i] for i in ids], [truth[i] for i in ids])
    return _pair(scores, truth)


def evaluate(
    scores_by_metric: Mapping[str, Mapping[Hashable, float] | ArrayLike],
    truth: Mapping[Hashable, float] | ArrayLike,
) -> EvaluationTable:
    """Table of weighted tau, Kendall tau-b, Spearman rho and top-1 regret for every metric."""
    if not isinstance(scores_by_metric, Mapping) or len(scores_by_metric) == 0:
        raise ValueError("scores_by_metric must be a non-empty mapping of metric name -> scores")
    rows = []
    for name, sc in scores_by_metric.items():
        s, t = _align(sc, truth, str(name))
        rows.append(
            EvaluationRow(
                metric=str(name),
                n_models=int(s.size),
                weighted_tau=weighted_tau(s, t),
                kendall_tau=kendall_tau(s, t),
                spearman=spearman(s, t),
                top1_regret=top1_regret(s, t),
            )
        )
    return EvaluationTable(rows=rows)


def baseline_value(value: Any) -> float | None:
    """A stored baseline's scalar (a number, or a dict with `value` or `score`); None if missing or non-finite."""
    if isinstance(value, Mapping):
        value = value.get("value", value.get("score"))
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def evaluate_scores(
    scores: Mapping[str, tuple[float, float]],
    baselines: Mapping[str, Mapping[str, Any]],
    truth: Mapping[str, float],
    num_foreground: int,
    *,
    a: float,
    b: float,
    alpha: float | None,
) -> dict[str, dict[str, Any]]:
    """Agreement with `truth` of the fused score, GRTD, LBTC and every baseline over the same models.

    Parameters
    ----------
    scores : mapping of model id to (grtd, lbtc)
        Raw scores of the models evaluated (fused over exactly these models).
    baselines : mapping of model id to {baseline name: stored value}
        As stored with each score (see `baseline_value`).
    truth : mapping of model id to float
        Fine-tuning results (e.g. mean Dice), one per model in `scores`.
    num_foreground, a, b, alpha
        The fusion's K and gate (transferability.fusion.fuse).

    Returns
    -------
    dict
        metric name -> {n_models, weighted_tau, kendall_tau, spearman, top1_regret}; a metric finite
        on fewer than two models is left out.
    """
    fused = fuse(dict(scores), num_foreground, a=a, b=b, alpha=alpha)
    by_metric: dict[str, dict[str, float]] = {
        "fused": {str(m.model_id): m.score for m in fused.models},
        "grtd": {m: float(g) for m, (g, _l) in scores.items()},
        "lbtc": {m: float(l) for m, (_g, l) in scores.items()},
    }
    for name in sorted({n for per_model in baselines.values() for n in (per_model or {})}):
        values = {m: baseline_value((baselines.get(m) or {}).get(name)) for m in scores}
        by_metric[name] = {m: v for m, v in values.items() if v is not None}
    out: dict[str, dict[str, Any]] = {}
    for name, vals in by_metric.items():
        if len(vals) < 2:
            continue
        row = evaluate({name: vals}, {m: truth[m] for m in vals}).to_dict()["rows"][0]
        row.pop("metric", None)
        out[name] = row
    return out
