"""Start-up recovery of the embedded mode: re-queue work a crash left behind.

The filesystem broker deletes a message when a worker takes it, so a crash of the whole
embedded service loses the messages of the items then running. At start-up every unfinished
item (queued or running, ranking not cancelled), every unfinished confirmation fold and every
model still `validating` is sent again; tasks are idempotent, so a message that did survive only causes a no-op duplicate.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.context import Dispatcher
from models_registry.confirmations import refresh_confirmation
from models_registry.jobs import refresh_job
from models_registry.tables import Confirmation, ConfirmationItem, Model, RankingItem, RankingJob


def requeue_unfinished(sessions: sessionmaker[Session], dispatcher: Dispatcher) -> dict[str, int]:
    with sessions() as s:
        rows = s.execute(
            select(RankingItem, RankingJob.cancel_requested)
            .join(RankingJob, RankingJob.id == RankingItem.ranking_id)
            .where(RankingItem.status.in_(("queued", "running")))
        ).all()
        items, cancelled = [], 0
        for item, cancel in rows:
            if cancel:
                item.status = "cancelled"
                cancelled += 1
            else:
                item.status, item.stage = "queued", None
                items.append(item.id)
        for job_id in {item.ranking_id for item, _ in rows}:
            s.flush()
            refresh_job(s, job_id)
        models = list(s.scalars(select(Model.id).where(Model.status == "validating")))
        units = s.execute(
            select(ConfirmationItem, Confirmation.cancel_requested)
            .join(Confirmation, Confirmation.id == ConfirmationItem.confirmation_id)
            .where(ConfirmationItem.status.in_(("queued", "running")))
        ).all()
        folds = []
        for unit, cancel in units:
            if cancel:
                unit.status = "cancelled"
                cancelled += 1
            else:
                unit.status, unit.stage = "queued", None
                folds.append(unit.id)
        for conf_id in {unit.confirmation_id for unit, _ in units}:
            s.flush()
            refresh_confirmation(s, conf_id)
        s.commit()
    for item_id in items:
        dispatcher.score_item(item_id)
    for model_id in models:
        dispatcher.validate_model(model_id)
    for unit_id in folds:
        dispatcher.finetune_item(unit_id)
    return {"items": len(items), "models": len(models), "finetunes": len(folds), "cancelled": cancelled}
