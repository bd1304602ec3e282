"""Learn the fusion gate from a tenant's own evaluations (metrics.md §5, §7).

The fused score S_m = α N(GRTD_m) + (1 - α) N(LBTC_m) uses α = sigmoid(a (ln K - b)) with the
defaults DEFAULT_A and DEFAULT_B. Once a tenant has fine-tuned a zoo on some of its own tasks, each
such evaluation (the raw scores of the zoo, the fine-tuning truth and the task's K) tells which α
would have ranked the models best. This module fits α to those evaluations and says, by
leaving one evaluation out at a time, whether the fit generalises better than the default.

The objective is the mean weighted Kendall tau (`transferability.evaluation.weighted_tau`) of the
fused score against the truth over the evaluations. It is piecewise constant in α (the ranking
changes only where two models' fused scores cross), so it is maximised by exhaustive search over a
grid; see `fit_calibration` for the grids and the tie-breaking rule, which returns the default
gate exactly when the evaluations carry no signal.

Pure computation over plain mappings: no web framework and no database.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from transferability.evaluation import weighted_tau
from transferability.fusion import DEFAULT_A, DEFAULT_B, task_alpha

__all__ = [
    "KINDS",
    "MIN_TRUSTED_EVALUATIONS",
    "Calibration",
    "CalibrationExample",
    "CalibrationReport",
    "calibration_report",
    "example_tau",
    "fit_calibration",
]

KINDS = ("auto", "gate", "per_k")
"""Accepted values of `kind`: "auto" resolves to "per_k" below 3 distinct K values, else "gate"."""

MIN_GATE_DISTINCT_K = 3
"""Below this many distinct K values the gate's slope is not identifiable ("auto" fits per K)."""

MIN_TRUSTED_EVALUATIONS = 5
"""Below this many usable evaluations the report warns that the fit is not to be trusted."""

DEFAULT_A_GRID = tuple(0.5 * i for i in range(33))  # 0, 0.5, ..., 16
_TIE_TOL = 1e-12


# ----------------------------------------------------------------------------- data
@dataclass(frozen=True)
class CalibrationExample:
    """One evaluation: a task's raw scores for a zoo and the fine-tuning truth.

    Attributes
    ----------
    scores : mapping of model id to (float, float)
        Raw (GRTD, LBTC) of every model of the zoo as it was ranked, both higher-is-better. The
        min-max normalisation N runs over all these models, as in the ranking the tenant saw.
    truth : mapping of model id to float
        Fine-tuning result (e.g. mean Dice), higher is better. Models without a score are ignored;
        the agreement is measured over the models present in both mappings.
    num_foreground_classes : int
        K of the task (>= 1).
    """

    scores: Mapping[str, tuple[float, float]]
    truth: Mapping[str, float]
    num_foreground_classes: int


@dataclass(frozen=True)
class Calibration:
    """A fitted fusion gate.

    Attributes
    ----------
    kind : {"gate", "per_k"}
        "gate": α = sigmoid(a (ln K - b)) with fitted `a` and `b`. "per_k": one α per K in
        `alpha_by_k`; any other K falls back to the default gate (`a` = DEFAULT_A, `b` = DEFAULT_B).
    a, b : float
        Slope and centre of the gate (the defaults when `kind` is "per_k").
    alpha_by_k : dict of int to float
        α per K seen in the evaluations; empty when `kind` is "gate".
    """

    kind: str
    a: float
    b: float
    alpha_by_k: dict[int, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in ("gate", "per_k"):
            raise ValueError(f"calibration kind must be 'gate' or 'per_k', got {self.kind!r}")
        if not (_is_real(self.a) and _is_real(self.b) and math.isfinite(self.a) and math.isfinite(self.b)):
            raise ValueError("calibration a and b must be finite numbers")
        if self.kind == "gate" and self.alpha_by_k:
            raise ValueError("a 'gate' calibration has no alpha_by_k")
        for k, alpha in self.alpha_by_k.items():
            _check_k(k)
            if not (_is_real(alpha) and 0.0 <= alpha <= 1.0):
                raise ValueError(f"alpha_by_k[{k}] must lie in [0, 1], got {alpha!r}")

    @classmethod
    def default(cls) -> Calibration:
        """The uncalibrated gate (DEFAULT_A, DEFAULT_B)."""
        return cls(kind="gate", a=DEFAULT_A, b=DEFAULT_B, alpha_by_k={})

    def alpha_for(self, k: int) -> float:
        """The α this calibration uses for a task with `k` foreground classes."""
        _check_k(k)
        if self.kind == "per_k" and int(k) in self.alpha_by_k:
            return float(self.alpha_by_k[int(k)])
        return task_alpha(int(k), self.a, self.b)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly view (the keys of `alpha_by_k` become strings)."""
        return {
            "kind": self.kind,
            "a": float(self.a),
            "b": float(self.b),
            "alpha_by_k": {str(k): float(v) for k, v in sorted(self.alpha_by_k.items())},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Calibration:
        """Inverse of `to_dict`; `alpha_by_k` keys may be ints or decimal strings."""
        if not isinstance(d, Mapping):
            raise ValueError("a calibration must be a mapping with kind, a, b and alpha_by_k")
        missing = [key for key in ("kind", "a", "b") if key not in d]
        if missing:
            raise ValueError(f"calibration is missing {', '.join(missing)}")
        raw = d.get("alpha_by_k") or {}
        if not isinstance(raw, Mapping):
            raise ValueError("calibration alpha_by_k must be a mapping of K to alpha")
        by_k: dict[int, float] = {}
        for key, value in raw.items():
            if isinstance(key, str) and key.strip().isdigit():
                k = int(key)
            elif isinstance(key, (int, np.integer)) and not isinstance(key, bool):
                k = int(key)
            else:
                raise ValueError(f"calibration alpha_by_k key {key!r} is not an integer K")
            by_k[k] = _as_float(value, f"alpha_by_k[{key!r}]")
        return cls(kind=str(d["kind"]), a=_as_float(d["a"], "a"), b=_as_float(d["b"], "b"), alpha_by_k=by_k)


@dataclass(frozen=True)
class CalibrationReport:
    """A calibration and how well it does, in sample and leaving one evaluation out.

    Attributes
    ----------
    calibration : Calibration
        Fitted on all usable evaluations.
    n_evaluations, n_skipped : int
        Evaluations used, and those skipped (fewer than 2 models with both a score and a truth, or
        a weighted tau undefined at every α, e.g. a constant truth).
    distinct_k : list of int
        The K values of the usable evaluations, ascending.
    mean_tau_default, mean_tau_fitted : float
        In-sample mean weighted tau of the default gate and of the fitted calibration.
    loo_tau_default, loo_tau_fitted : float or None
        Leave-one-evaluation-out: mean over the held-out evaluations of the default gate's tau, and
        of the tau of a calibration fitted without that evaluation. None with fewer than 2 usable
        evaluations.
    loo : list of dict
        Per held-out evaluation: "index" (position in the input sequence), "k", "tau_default",
        "tau_fitted", "alpha_default", "alpha_fitted".
    warnings : list of str
        Reasons to distrust the figures.
    """

    calibration: Calibration
    n_evaluations: int
    n_skipped: int
    distinct_k: list[int]
    mean_tau_default: float
    mean_tau_fitted: float
    loo_tau_default: float | None
    loo_tau_fitted: float | None
    loo: list[dict[str, Any]]
    warnings: list[str]

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly view."""
        return {
            "calibration": self.calibration.to_dict(),
            "n_evaluations": self.n_evaluations,
            "n_skipped": self.n_skipped,
            "distinct_k": list(self.distinct_k),
            "mean_tau_default": self.mean_tau_default,
            "mean_tau_fitted": self.mean_tau_fitted,
            "loo_tau_default": self.loo_tau_default,
            "loo_tau_fitted": self.loo_tau_fitted,
            "loo": [dict(e) for e in self.loo],
            "warnings": list(self.warnings),
        }


# ----------------------------------------------------------------------------- validation
def _is_real(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def _as_float(x: Any, what: str) -> float:
    if not _is_real(x):
        raise ValueError(f"calibration {what} must be a number, got {x!r}")
    return float(x)


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"num_foreground_classes (K) must be an integer >= 1, got {k!r}")
    return int(k)


def _resolve_kind(kind: str, distinct_k: int) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown calibration kind {kind!r}; expected one of {', '.join(KINDS)}")
    if kind == "auto":
        return "per_k" if distinct_k < MIN_GATE_DISTINCT_K else "gate"
    return kind


class _Prepared:
    """One validated evaluation: normalised scores and truth over the common models (sorted ids),
    with a cache of tau by α and by ranking, so a grid search calls `weighted_tau` once per
    distinct ranking rather than once per candidate."""

    def __init__(self, example: CalibrationExample, index: int) -> None:
        if not isinstance(example, CalibrationExample):
            raise ValueError(f"examples[{index}] must be a CalibrationExample, got {type(example).__name__}")
        self.index = index
        self.k = _check_k(example.num_foreground_classes)
        if not isinstance(example.scores, Mapping) or not isinstance(example.truth, Mapping):
            raise ValueError(f"examples[{index}]: scores and truth must be mappings keyed by model id")
        g: dict[Hashable, float] = {}
        l: dict[Hashable, float] = {}
        for mid, pair in example.scores.items():
            try:
                gv, lv = (float(v) for v in pair)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"examples[{index}].scores[{mid!r}] must be a (grtd, lbtc) pair of numbers") from exc
            if not (math.isfinite(gv) and math.isfinite(lv)):
                raise ValueError(f"examples[{index}].scores[{mid!r}] contains NaN or inf")
            g[mid], l[mid] = gv, lv
        truth: dict[Hashable, float] = {}
        for mid, value in example.truth.items():
            try:
                tv = float(value)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"examples[{index}].truth[{mid!r}] must be a number") from exc
            if not math.isfinite(tv):
                raise ValueError(f"examples[{index}].truth[{mid!r}] is NaN or inf")
            truth[mid] = tv
        try:
            self.ids = sorted(m for m in truth if m in g)
        except TypeError as exc:
            raise ValueError(f"examples[{index}]: model ids must be mutually comparable (e.g. all str)") from exc
        # N is min-max over the whole zoo scored (as fusion.fuse does), then restricted.
        self.gn = _minmax_over(g, self.ids)
        self.ln = _minmax_over(l, self.ids)
        self.truth = np.asarray([truth[m] for m in self.ids], np.float64)
        self.usable = (
            len(self.ids) >= 2
            and np.ptp(self.truth) > 0
            and not (np.ptp(self.gn) == 0 and np.ptp(self.ln) == 0)  # else S is constant at every α
        )
        self._by_alpha: dict[float, float] = {}
        self._by_ranking: dict[bytes, float] = {}

    def fused(self, alphas: NDArray[np.float64]) -> NDArray[np.float64]:
        """S for each α (rows), elementwise the same floating-point operations as `fusion.fuse`."""
        a = alphas[:, None]
        return a * self.gn[None, :] + (1.0 - a) * self.ln[None, :]

    def taus(self, alphas: Sequence[float] | NDArray[np.float64]) -> NDArray[np.float64]:
        """Weighted tau of S against the truth for each α (NaN where S is constant over the models)."""
        alphas = np.asarray(alphas, np.float64)
        todo = np.unique([a for a in alphas.tolist() if a not in self._by_alpha])
        if todo.size:
            s = self.fused(todo)
            order = np.argsort(s, axis=1, kind="stable")
            ties = np.diff(np.take_along_axis(s, order, axis=1), axis=1) == 0
            for i, alpha in enumerate(todo.tolist()):
                key = order[i].tobytes() + ties[i].tobytes()  # the ranking, ties included: all tau sees
                tau = self._by_ranking.get(key)
                if tau is None:
                    tau = weighted_tau(s[i], self.truth) if np.ptp(s[i]) > 0 else math.nan
                    self._by_ranking[key] = tau
                self._by_alpha[alpha] = tau
        return np.asarray([self._by_alpha[a] for a in alphas.tolist()], np.float64)

    def objective(self, alphas: Sequence[float] | NDArray[np.float64]) -> NDArray[np.float64]:
        """`taus` with a constant S (possible at one isolated α) counted as 0: no pair is ordered."""
        return np.nan_to_num(self.taus(alphas), nan=0.0)


def _minmax_over(values: Mapping[Hashable, float], ids: Sequence[Hashable]) -> NDArray[np.float64]:
    lo, hi = min(values.values()), max(values.values())
    if hi == lo:
        return np.full(len(ids), 0.5)
    return (np.asarray([values[m] for m in ids], np.float64) - lo) / (hi - lo)


def _prepare(examples: Sequence[CalibrationExample]) -> tuple[list[_Prepared], int]:
    if isinstance(examples, (str, bytes)) or not isinstance(examples, Sequence):
        raise ValueError("examples must be a sequence of CalibrationExample")
    prepared = [_Prepared(e, i) for i, e in enumerate(examples)]
    usable = [p for p in prepared if p.usable]
    return usable, len(prepared) - len(usable)


def _no_usable(n: int) -> ValueError:
    return ValueError(
        f"no usable evaluation among {n}: each needs at least 2 models with both a score and a truth, "
        "and a truth (and scores) that are not constant over them"
    )


# ----------------------------------------------------------------------------- fitting
def _default_alphas(ks: Sequence[int]) -> dict[int, float]:
    return {k: task_alpha(k) for k in ks}


def _fit_per_k(usable: Sequence[_Prepared], n_alpha: int) -> Calibration:
    by_k: dict[int, list[_Prepared]] = {}
    for p in usable:
        by_k.setdefault(p.k, []).append(p)
    alpha_by_k: dict[int, float] = {}
    for k, group in sorted(by_k.items()):
        default = task_alpha(k)
        grid = np.unique(np.append(np.linspace(0.0, 1.0, n_alpha), default))
        mean = np.mean([p.objective(grid) for p in group], axis=0)
        best = np.flatnonzero(mean >= mean.max() - _TIE_TOL)
        # ties toward the default α, then toward the smaller α (deterministic)
        pick = min(best, key=lambda i: (abs(grid[i] - default), grid[i]))
        alpha_by_k[k] = float(grid[pick])
    return Calibration(kind="per_k", a=DEFAULT_A, b=DEFAULT_B, alpha_by_k=alpha_by_k)


def _fit_gate(usable: Sequence[_Prepared], a_grid: Sequence[float], n_b: int) -> Calibration:
    ks = sorted({p.k for p in usable})
    lo, hi = math.log(ks[0]) - 1.0, math.log(ks[-1]) + 1.0
    a_values = sorted({float(a) for a in a_grid} | {DEFAULT_A})
    b_values = sorted(set(np.linspace(lo, hi, n_b).tolist()) | {DEFAULT_B})
    cands = [(a, b) for a in a_values for b in b_values]
    alphas = {k: np.asarray([task_alpha(k, a, b) for a, b in cands]) for k in ks}
    total = np.zeros(len(cands))
    for p in usable:
        total += p.objective(alphas[p.k])
    mean = total / len(usable)
    best = np.flatnonzero(mean >= mean.max() - _TIE_TOL)
    default = _default_alphas(ks)
    # ties toward the candidate whose α on the seen K are closest to the default's, then toward the
    # default a and b (deterministic); the default itself is a candidate, so no signal -> default.
    dist = sum((alphas[k] - default[k]) ** 2 for k in ks)
    pick = min(best, key=lambda i: (dist[i], abs(cands[i][0] - DEFAULT_A), abs(cands[i][1] - DEFAULT_B), i))
    a, b = cands[pick]
    return Calibration(kind="gate", a=float(a), b=float(b), alpha_by_k={})


def _fit(usable: Sequence[_Prepared], kind: str, a_grid: Sequence[float], n_b: int, n_alpha: int) -> Calibration:
    resolved = _resolve_kind(kind, len({p.k for p in usable}))
    if resolved == "per_k":
        return _fit_per_k(usable, n_alpha)
    return _fit_gate(usable, a_grid, n_b)


def _check_grids(a_grid: Sequence[float] | None, n_b: int, n_alpha: int) -> Sequence[float]:
    grid = DEFAULT_A_GRID if a_grid is None else tuple(a_grid)
    if not grid or not all(_is_real(a) and math.isfinite(a) for a in grid):
        raise ValueError("a_grid must be a non-empty sequence of finite numbers")
    if isinstance(n_b, bool) or not isinstance(n_b, int) or n_b < 2:
        raise ValueError(f"n_b must be an integer >= 2, got {n_b!r}")
    if isinstance(n_alpha, bool) or not isinstance(n_alpha, int) or n_alpha < 2:
        raise ValueError(f"n_alpha must be an integer >= 2, got {n_alpha!r}")
    return grid


def fit_calibration(
    examples: Sequence[CalibrationExample],
    *,
    kind: str = "auto",
    a_grid: Sequence[float] | None = None,
    n_b: int = 81,
    n_alpha: int = 101,
) -> Calibration:
    """Fit the fusion gate that maximises the mean weighted tau over the evaluations.

    Parameters
    ----------
    examples : sequence of CalibrationExample
        The tenant's evaluations. Those with fewer than 2 models in both `scores` and `truth`, or
        whose weighted tau is undefined at every α (constant truth, or constant GRTD and LBTC over
        those models), are skipped.
    kind : {"auto", "gate", "per_k"}, default "auto"
        "per_k": one α per K seen, searched on `n_alpha` evenly spaced points of [0, 1] plus the
        default gate's α for that K; other K keep the default gate. "gate": (a, b) of
        α = sigmoid(a (ln K - b)) searched on `a_grid` (plus DEFAULT_A) × `n_b` evenly spaced b from
        ln(min K) - 1 to ln(max K) + 1 (plus DEFAULT_B). "auto": "per_k" when fewer than 3 distinct
        K are seen (the slope is then not identifiable), else "gate".
    a_grid : sequence of float, optional
        Slopes tried by the gate search; default 0, 0.5, ..., 16.
    n_b, n_alpha : int, default 81 and 101
        Grid sizes of the gate centre and of the per-K α.

    Returns
    -------
    Calibration

    Raises
    ------
    ValueError
        No usable evaluation, an unknown `kind`, a non-finite score or truth, a K below 1.

    Notes
    -----
    The objective, mean over evaluations of the weighted tau of S = α N(GRTD) + (1 - α) N(LBTC)
    against the truth, is piecewise constant in α, so the search is exhaustive over the grid. At
    an isolated α where S is constant over the models the tau is undefined and counts as 0.

    Ties among optimal candidates are frequent (whole intervals of α give the same ranking) and
    are broken toward the default: per K, the optimal α closest to the default gate's α for that
    K; for the gate, the optimal (a, b) whose α on the K seen are closest (sum of squares) to the
    default's, then the one nearest DEFAULT_A and DEFAULT_B. The default is always a candidate, so
    evaluations that carry no signal return the default gate exactly.
    """
    grid = _check_grids(a_grid, n_b, n_alpha)
    _resolve_kind(kind, 0)  # reject an unknown kind before looking at the data
    usable, _ = _prepare(examples)
    if not usable:
        raise _no_usable(len(examples))
    return _fit(usable, kind, grid, n_b, n_alpha)


def example_tau(example: CalibrationExample, alpha: float) -> float:
    """Weighted tau of the fused score at `alpha` against the truth, over the models in both.

    N is min-max over every model in `example.scores` (the zoo as ranked, as `fusion.fuse` does);
    the tau is `transferability.evaluation.weighted_tau` over the models that also have a truth,
    in sorted id order. Returns NaN where the tau is undefined: fewer than 2 such models, a
    constant truth, or a fused score constant over them.
    """
    if not _is_real(alpha) or not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha!r}")
    p = _Prepared(example, 0)
    if len(p.ids) < 2 or np.ptp(p.truth) == 0:
        return math.nan
    return float(p.taus([float(alpha)])[0])


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values))


def calibration_report(
    examples: Sequence[CalibrationExample],
    *,
    kind: str = "auto",
    a_grid: Sequence[float] | None = None,
    n_b: int = 81,
    n_alpha: int = 101,
) -> CalibrationReport:
    """Fit a calibration (`fit_calibration`) and measure it in sample and leaving one out.

    Parameters are those of `fit_calibration`.

    Returns
    -------
    CalibrationReport
        In-sample mean weighted tau of the default gate and of the fitted calibration, and the
        leave-one-evaluation-out figures: for each usable evaluation, a calibration is fitted on
        the others (with the same `kind`; "auto" is resolved again on each fold's K values) and
        both it and the default gate score the held-out one. Out-of-sample gains, not in-sample
        ones, say whether the calibration should replace the default.

    Raises
    ------
    ValueError
        As `fit_calibration`.
    """
    grid = _check_grids(a_grid, n_b, n_alpha)
    _resolve_kind(kind, 0)
    usable, skipped = _prepare(examples)
    if not usable:
        raise _no_usable(len(examples))
    cal = _fit(usable, kind, grid, n_b, n_alpha)
    ks = sorted({p.k for p in usable})
    in_default = _mean([float(p.objective([task_alpha(p.k)])[0]) for p in usable])
    in_fitted = _mean([float(p.objective([cal.alpha_for(p.k)])[0]) for p in usable])

    loo: list[dict[str, Any]] = []
    if len(usable) >= 2:
        for i, held in enumerate(usable):
            fold = _fit([p for j, p in enumerate(usable) if j != i], kind, grid, n_b, n_alpha)
            a_def, a_fit = task_alpha(held.k), fold.alpha_for(held.k)
            loo.append({
                "index": held.index,
                "k": held.k,
                "tau_default": float(held.objective([a_def])[0]),
                "tau_fitted": float(held.objective([a_fit])[0]),
                "alpha_default": a_def,
                "alpha_fitted": a_fit,
            })
    loo_default = _mean([e["tau_default"] for e in loo]) if loo else None
    loo_fitted = _mean([e["tau_fitted"] for e in loo]) if loo else None

    warnings: list[str] = []
    n = len(usable)
    if n < MIN_TRUSTED_EVALUATIONS:
        warnings.append(f"only {n} evaluation{'s' if n != 1 else ''}: below {MIN_TRUSTED_EVALUATIONS}, "
                        "the fit is not to be trusted")
    if skipped:
        warnings.append(f"{skipped} evaluation{'s' if skipped != 1 else ''} skipped: fewer than 2 models with both a "
                        "score and a truth, or a truth (or scores) constant over them")
    if cal.kind == "gate" and len(ks) < MIN_GATE_DISTINCT_K:
        warnings.append(f"gate fitted on {len(ks)} distinct K value{'s' if len(ks) != 1 else ''}: its slope is not "
                        "identifiable")
    if cal.kind == "per_k":
        warnings.append("per-K calibration: K values not seen (" + ", ".join(str(k) for k in ks)
                        + " seen) keep the default gate")
    if loo_default is not None and loo_fitted is not None and loo_fitted <= loo_default:
        warnings.append(f"leave-one-out: the fitted calibration ({loo_fitted:.3f}) does not beat the default "
                        f"({loo_default:.3f}) on held-out evaluations")
    return CalibrationReport(
        calibration=cal,
        n_evaluations=n,
        n_skipped=skipped,
        distinct_k=ks,
        mean_tau_default=in_default,
        mean_tau_fitted=in_fitted,
        loo_tau_default=loo_default,
        loo_tau_fitted=loo_fitted,
        loo=loo,
        warnings=warnings,
    )
