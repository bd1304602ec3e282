"""Ranking job state: the job status is derived from its items (one per model)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from models_registry.tables import TERMINAL_ITEM, RankingItem, RankingJob, utcnow


def derive_status(item_statuses: Iterable[str], cancel_requested: bool) -> str:
    """queued | running | succeeded | partial | failed | cancelled, from the items' statuses."""
    statuses = list(item_statuses)
    if not statuses:
        return "failed"
    if all(s in TERMINAL_ITEM for s in statuses):
        if cancel_requested:
            return "cancelled"
        ok = sum(s == "succeeded" for s in statuses)
        if ok == len(statuses):
            return "succeeded"
        return "partial" if ok else "failed"
    if cancel_requested:
        return "running" if any(s == "running" for s in statuses) else "cancelled"
    if all(s == "queued" for s in statuses):
        return "queued"
    return "running"


def refresh_job(session: Session, job_id: str) -> RankingJob | None:
    """Recompute and store the job's status from its items (call after any item change)."""
    session.flush()
    job = session.get(RankingJob, job_id, with_for_update=session.bind.dialect.name == "postgresql")  # type: ignore[union-attr]
    if job is None:
        return None
    statuses = session.scalars(select(RankingItem.status).where(RankingItem.ranking_id == job_id)).all()
    status = derive_status(statuses, job.cancel_requested)
    if status != job.status:
        job.status = status
        if status in ("succeeded", "partial", "failed", "cancelled") and job.finished_at is None:
            job.finished_at = utcnow()
    job.updated_at = utcnow()
    return job
