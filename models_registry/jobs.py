"""Ranking job state: the job status is derived from its items (one per model)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from models_registry.tables import TERMINAL_ITEM, RankingItem, RankingJob, utcnow

T = TypeVar("T")


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


def refresh_parent(session: Session, parent_cls: type[T], parent_id: str, status_of_items: Any) -> T | None:
    """Lock (on PostgreSQL) and reload a parent row (a ranking, a confirmation), derive its status
    from `status_of_items` (a select of its items' statuses) and store it, with `finished_at` on
    reaching a terminal status and `updated_at` always."""
    session.flush()
    parent = session.get(parent_cls, parent_id, with_for_update=session.bind.dialect.name == "postgresql")  # type: ignore[union-attr]
    if parent is None:
        return None
    status = derive_status(session.scalars(status_of_items).all(), parent.cancel_requested)  # type: ignore[attr-defined]
    if status != parent.status:  # type: ignore[attr-defined]
        parent.status = status  # type: ignore[attr-defined]
        if status in ("succeeded", "partial", "failed", "cancelled") and parent.finished_at is None:  # type: ignore[attr-defined]
            parent.finished_at = utcnow()  # type: ignore[attr-defined]
    parent.updated_at = utcnow()  # type: ignore[attr-defined]
    return parent


def refresh_job(session: Session, job_id: str) -> RankingJob | None:
    """Recompute and store the job's status from its items (call after any item change)."""
    return refresh_parent(session, RankingJob, job_id, select(RankingItem.status).where(RankingItem.ranking_id == job_id))
