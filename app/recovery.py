"""Start-up recovery of the embedded mode: re-queue work a crash left behind.

The filesystem broker deletes a message when a worker takes it, so a crash of the whole
embedded service loses the messages of the items then running. At start-up every unfinished
item (queued or running, ranking not cancelled), every unfinished confirmation fold and every
model still `validating` is sent again; tasks are idempotent, so a message that did survive only causes a no-op duplicate.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.context import Dispatcher
from models_registry.confirmations import refresh_confirmation
from models_registry.jobs import refresh_job
from models_registry.tables import Confirmation, ConfirmationItem, Model, RankingItem, RankingJob


def _reopen(s: Session, item_cls: type, parent_cls: type, parent_key: Any, refresh: Any) -> tuple[list[str], int]:
    """Mark the unfinished units of `item_cls` queued again (or cancelled when their parent was) and
    refresh their parents; return the ids to re-send and how many were cancelled."""
    rows = s.execute(
        select(item_cls, parent_cls.cancel_requested).join(parent_cls, parent_cls.id == parent_key)
        .where(item_cls.status.in_(("queued", "running")))
    ).all()
    again, cancelled = [], 0
    for unit, cancel in rows:
        if cancel:
            unit.status = "cancelled"
            cancelled += 1
        else:
            unit.status, unit.stage = "queued", None
            again.append(unit.id)
    s.flush()
    for parent_id in {getattr(unit, parent_key.key) for unit, _ in rows}:
        refresh(s, parent_id)
    return again, cancelled


def requeue_unfinished(sessions: sessionmaker[Session], dispatcher: Dispatcher) -> dict[str, int]:
    with sessions() as s:
        items, cancelled_items = _reopen(s, RankingItem, RankingJob, RankingItem.ranking_id, refresh_job)
        folds, cancelled_folds = _reopen(s, ConfirmationItem, Confirmation, ConfirmationItem.confirmation_id, refresh_confirmation)
        models = list(s.scalars(select(Model.id).where(Model.status == "validating")))
        s.commit()
    for item_id in items:
        dispatcher.score_item(item_id)
    for model_id in models:
        dispatcher.validate_model(model_id)
    for unit_id in folds:
        dispatcher.finetune_item(unit_id)
    return {"items": len(items), "models": len(models), "finetunes": len(folds), "cancelled": cancelled_items + cancelled_folds}
