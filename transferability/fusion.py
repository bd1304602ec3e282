"""Task-adaptive fusion of GRTD and LBTC into one ranking (metrics.md §5).

α = sigmoid(a (ln K - b)) moves the weight from the local score (LBTC, few classes) to the global
one (GRTD, many classes); both scores are min-max normalised over the models compared, so the
fused score is zoo-relative and is recomputed whenever a ranking is read.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

DEFAULT_A = 6.0
DEFAULT_B = math.log(2.5)


@dataclass(frozen=True)
class FusedModel:
    """One model's raw and normalised scores, fused score and 1-based rank."""

    model_id: Hashable
    grtd: float
    lbtc: float
    grtd_norm: float
    lbtc_norm: float
    score: float
    rank: int


@dataclass(frozen=True)
class FusionResult:
    """Models ordered by rank (score descending, ties by model id) and the gate that fused them."""

    alpha: float
    kappa: float
    num_foreground_classes: int
    a: float
    b: float
    alpha_pinned: bool
    models: list[FusedModel]

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly view."""
        out = asdict(self)
        out["models"] = [asdict(m) for m in self.models]
        return out


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def task_alpha(num_foreground_classes: int, a: float = DEFAULT_A, b: float = DEFAULT_B) -> float:
    """Gate α = sigmoid(a (ln K - b)) for K foreground classes (K = 1: ~0.004, K = 3: ~0.75)."""
    k = num_foreground_classes
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"num_foreground_classes must be an integer >= 1, got {k}")
    if not (math.isfinite(a) and math.isfinite(b)):
        raise ValueError("a and b must be finite")
    return _sigmoid(a * (math.log(int(k)) - b))


def minmax(values: Mapping[Hashable, float]) -> dict[Hashable, float]:
    """Min-max normalisation to [0, 1]; every model gets 0.5 when all values are equal."""
    lo, hi = min(values.values()), max(values.values())
    if hi == lo:
        return {k: 0.5 for k in values}
    span = hi - lo
    return {k: (v - lo) / span for k, v in values.items()}


@dataclass(frozen=True)
class ResolvedFusion:
    """The gate's parameters: `alpha` pins it when not None, else α = sigmoid(a (ln K - b))."""

    alpha: float | None
    a: float
    b: float


def resolve_fusion(
    stored: Mapping[str, Any] | None = None, *, alpha: float | None = None, a: float | None = None, b: float | None = None
) -> ResolvedFusion:
    """The fusion parameters in force: per-call overrides, else the stored ones, else the defaults.

    `stored` is a ranking's saved fusion block (`a`, `b`, `alpha`; missing or None keys fall back to
    DEFAULT_A and DEFAULT_B and an unpinned gate), so every reader resolves defaults in one place.
    """
    saved = dict(stored or {})
    a_val = a if a is not None else saved.get("a")
    b_val = b if b is not None else saved.get("b")
    return ResolvedFusion(
        alpha=alpha if alpha is not None else saved.get("alpha"),
        a=float(a_val) if a_val is not None else DEFAULT_A,
        b=float(b_val) if b_val is not None else DEFAULT_B,
    )


def fuse(
    scores: Mapping[Hashable, tuple[float, float]],
    num_foreground_classes: int,
    a: float = DEFAULT_A,
    b: float = DEFAULT_B,
    alpha: float | None = None,
) -> FusionResult:
    """S_m = α N(GRTD_m) + (1 - α) N(LBTC_m) over the models given, ranked descending (metrics.md §5).

    Parameters
    ----------
    scores : mapping of model id to (float, float)
        (GRTD, LBTC) per model, both higher-is-better; N is min-max over these models only.
    num_foreground_classes : int
        K of the task, which gates the fusion: α = sigmoid(a (ln K - b)).
    a, b : float, default DEFAULT_A and DEFAULT_B
        Slope and centre of the gate.
    alpha : float in [0, 1], optional
        Pins α instead of the gate.

    Returns
    -------
    FusionResult
        The models by rank with raw, normalised and fused scores, and the α used. Ties in S are
        ordered by model id (ids must be mutually comparable, e.g. all str).
    """
    if not isinstance(scores, Mapping) or len(scores) == 0:
        raise ValueError("scores must be a non-empty mapping of model id -> (grtd, lbtc)")
    g: dict[Hashable, float] = {}
    l: dict[Hashable, float] = {}
    for mid, pair in scores.items():
        try:
            gv, lv = (float(v) for v in pair)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"scores[{mid!r}] must be a (grtd, lbtc) pair of numbers") from exc
        if not (math.isfinite(gv) and math.isfinite(lv)):
            raise ValueError(f"scores[{mid!r}] contains NaN or inf")
        g[mid], l[mid] = gv, lv
    kappa_alpha = task_alpha(num_foreground_classes, a, b)
    if alpha is None:
        gate = kappa_alpha
    else:
        gate = float(alpha)
        if not (0.0 <= gate <= 1.0):
            raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    gn, ln_ = minmax(g), minmax(l)
    fused = {m: gate * gn[m] + (1.0 - gate) * ln_[m] for m in scores}
    try:
        order = sorted(scores, key=lambda m: (-fused[m], m))
    except TypeError as exc:
        raise ValueError("model ids must be mutually comparable (e.g. all str) to break ties") from exc
    models = [
        FusedModel(m, g[m], l[m], gn[m], ln_[m], fused[m], rank) for rank, m in enumerate(order, start=1)
    ]
    return FusionResult(
        alpha=gate,
        kappa=math.log(int(num_foreground_classes)),
        num_foreground_classes=int(num_foreground_classes),
        a=float(a),
        b=float(b),
        alpha_pinned=alpha is not None,
        models=models,
    )
