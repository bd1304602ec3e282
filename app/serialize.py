"""Registry rows -> JSON-ready dicts matching app.schemas (kept apart from the routes)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from models_registry.tables import Model, ModelScore, PilotSet, RankingItem, RankingJob


def utc(moment: datetime | None) -> datetime | None:
    """A stored time as timezone-aware UTC: SQLite hands back naive datetimes (it keeps no offset),
    and a date-time without one is not RFC 3339, as the OpenAPI `date-time` format requires."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def model_dict(m: Model) -> dict[str, Any]:
    spec = m.spec or {}
    return {
        "id": m.id,
        "name": m.name,
        "format": m.format,
        "catalog": m.catalog,
        "ssl_method": spec.get("ssl_method"),
        "shared": m.tenant_id is None,
        "sha256": m.sha256,
        "size_bytes": m.size_bytes,
        "status": m.status,
        "error": {"code": m.error_code, "detail": m.error_detail} if m.error_code else None,
        "stages": m.stages or [],
        "preprocessing": spec.get("preprocessing"),
        "load_report": m.load_report,
        "created_at": utc(m.created_at),
        "validated_at": utc(m.validated_at),
    }


def pilot_set_dict(ps: PilotSet, *, with_cases: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": ps.id,
        "name": ps.name,
        "layout": ps.layout,
        "labels": ps.labels,
        "K": ps.num_foreground,
        "channels": ps.channels,
        "n_cases": len(ps.cases),
        "created_at": utc(ps.created_at),
    }
    if with_cases:
        out["cases"] = [
            {
                "id": c.id,
                "shape": c.shape,
                "spacing": c.spacing,
                "n_channels": c.n_channels,
                "voxels_per_class": c.voxels_per_class,
            }
            for c in ps.cases
        ]
    return out


def item_dict(it: RankingItem, names: dict[str, str], score: ModelScore | None) -> dict[str, Any]:
    return {
        "model_id": it.model_id,
        "model_name": names.get(it.model_id),
        "status": it.status,
        "stage": it.stage,
        "progress": it.progress,
        "attempts": it.attempts,
        "reused": it.reused,
        "error": {"code": it.error_code, "detail": it.error_detail} if it.error_code else None,
        "numeric_mode": score.numeric_mode if score else None,
        "grtd": score.grtd if score else None,
        "lbtc": score.lbtc if score else None,
        "baselines": score.baselines if score else None,
        "timings": score.timings if score else None,
        "result": score.result if score else None,
    }


def ranking_dict(job: RankingJob, names: dict[str, str], scores: dict[str, ModelScore]) -> dict[str, Any]:
    items = [item_dict(it, names, scores.get(it.score_id or "")) for it in job.items]
    progress = sum(1.0 if it.status in ("succeeded", "failed", "cancelled") else it.progress for it in job.items)
    return {
        "id": job.id,
        "pilot_set_id": job.pilot_set_id,
        "status": job.status,
        "progress": progress / max(len(job.items), 1),
        "config": job.config,
        "config_hash": job.config_hash,
        "fusion": job.fusion,
        "cancel_requested": job.cancel_requested,
        "error": job.error,
        "items": items,
        "created_at": utc(job.created_at),
        "updated_at": utc(job.updated_at),
        "finished_at": utc(job.finished_at),
    }
