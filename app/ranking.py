"""Read-time fusion (metrics.md §5) and validation metrics (§7) over stored score rows."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from models_registry.tables import ModelScore
from transferability.evaluation import evaluate
from transferability.fusion import fuse


def fused_ranking(
    scores: Mapping[str, ModelScore], names: Mapping[str, str], num_foreground: int, *, a: float, b: float, alpha: float | None
) -> dict[str, Any]:
    """The fused ordering over exactly the given models, as the `/v1/rank` body (without ids of the job)."""
    result = fuse({m: (s.grtd, s.lbtc) for m, s in scores.items()}, num_foreground, a=a, b=b, alpha=alpha)
    return {
        "K": result.num_foreground_classes,
        "alpha": result.alpha,
        "alpha_pinned": result.alpha_pinned,
        "a": result.a,
        "b": result.b,
        "models": [
            {
                "rank": m.rank,
                "model_id": m.model_id,
                "name": names.get(str(m.model_id)),
                "fused": m.score,
                "grtd": m.grtd,
                "lbtc": m.lbtc,
                "grtd_norm": m.grtd_norm,
                "lbtc_norm": m.lbtc_norm,
            }
            for m in result.models
        ],
    }


def baseline_value(value: Any) -> float | None:
    """A baseline's scalar (stored as a number, or a dict with `value`), None if missing/non-finite."""
    if isinstance(value, Mapping):
        value = value.get("value", value.get("score"))
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def evaluate_ranking(
    scores: Mapping[str, ModelScore], truth: Mapping[str, float], num_foreground: int, *, a: float, b: float, alpha: float | None
) -> dict[str, dict[str, Any]]:
    """metric name -> {n_models, weighted_tau, kendall_tau, spearman, top1_regret} for fused, grtd,
    lbtc and every baseline (each over the models where it is finite; skipped below two models)."""
    fused = fuse({m: (s.grtd, s.lbtc) for m, s in scores.items()}, num_foreground, a=a, b=b, alpha=alpha)
    by_metric: dict[str, dict[str, float]] = {
        "fused": {str(m.model_id): m.score for m in fused.models},
        "grtd": {m: s.grtd for m, s in scores.items()},
        "lbtc": {m: s.lbtc for m, s in scores.items()},
    }
    baseline_names = sorted({name for s in scores.values() for name in (s.baselines or {})})
    for name in baseline_names:
        values = {m: baseline_value((s.baselines or {}).get(name)) for m, s in scores.items()}
        by_metric[name] = {m: v for m, v in values.items() if v is not None}
    out: dict[str, dict[str, Any]] = {}
    for name, vals in by_metric.items():
        if len(vals) < 2:
            continue
        row = evaluate({name: vals}, {m: truth[m] for m in vals}).to_dict()["rows"][0]
        row.pop("metric", None)
        out[name] = row
    return out
