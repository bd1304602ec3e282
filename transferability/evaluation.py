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
