"""Read-time fusion (metrics.md §5) and validation metrics (§7) over stored score rows."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from models_registry.tables import ModelScore
from transferability.bootstrap import case_subsets, rank_uncertainty
from transferability.evaluation import baseline_value, evaluate_scores
from transferability.fusion import fuse

_DRAW_KEYS = ("method", "n_cases", "subset_size", "n_replicates", "seed", "draws")
__all__ = ["baseline_value", "evaluate_ranking", "fused_ranking", "ranking_uncertainty"]
FEW_HALVES = 20  # below this many distinct halves, P(rank 1) and P(above) come with a note


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


def ranking_uncertainty(
    scores: Mapping[str, ModelScore], num_foreground: int, *, a: float, b: float, alpha: float | None, keep_replicates: bool = False
) -> dict[str, Any]:
    """The `uncertainty` of `/v1/rank`: every model's stored replicates fused per replicate
    (transferability.bootstrap.rank_uncertainty), or `available: false` with the reason.
    `keep_replicates` adds the fused score of every replicate (`fused_replicates`, for the report)."""
    reps = {m: s.replicates for m, s in scores.items()}
    missing = sorted(m for m, r in reps.items() if not r or "grtd" not in r)
    if missing:
        reasons = {str((reps[m] or {}).get("unavailable", "")) for m in missing} - {""}
        why = "; ".join(sorted(reasons)) or "scored without replicates (n_bootstrap = 0, or before they existed)"
        return {"available": False, "reason": f"{len(missing)} model(s) have no replicates: {why}", "models_without": missing}
    draws = {tuple(r.get(k) for k in _DRAW_KEYS) for r in reps.values()}
    if len(draws) != 1:
        return {"available": False, "reason": "the models were resampled with different draws (another seed or number of replicates)"}
    first = next(iter(reps.values()))

    def arr(values: list[float | None]) -> list[float]:
        return [math.nan if v is None else float(v) for v in values]

    out = rank_uncertainty(
        {m: (s.grtd, s.lbtc) for m, s in scores.items()},
        {m: (arr(r["grtd"]), arr(r["lbtc"])) for m, r in reps.items()},
        num_foreground,
        int(first["n_cases"]),
        a=a,
        b=b,
        alpha=alpha,
        keep_replicates=keep_replicates,
        effective_cases=first.get("effective_cases"),
    )
    out["seed"] = first["seed"]
    halves = case_subsets(int(first["n_cases"]), int(first["n_replicates"]), int(first["seed"]))
    out["n_distinct_halves"] = len({row.tobytes() for row in halves})
    if out["n_distinct_halves"] < FEW_HALVES:
        out["note"] = (f"only {out['n_distinct_halves']} distinct halves of {first['n_cases']} cases: the shares rest on "
                       "few resamples; more pilot cases make them meaningful")
    return {"available": True, **out}


def evaluate_ranking(
    scores: Mapping[str, ModelScore], truth: Mapping[str, float], num_foreground: int, *, a: float, b: float, alpha: float | None
) -> dict[str, dict[str, Any]]:
    """transferability.evaluation.evaluate_scores over stored score rows (fused, grtd, lbtc, baselines)."""
    return evaluate_scores(
        {m: (s.grtd, s.lbtc) for m, s in scores.items()}, {m: s.baselines or {} for m, s in scores.items()}, truth,
        num_foreground, a=a, b=b, alpha=alpha,
    )
