"""Calibrations: fit the fusion gate on a tenant's own evaluations (transferability.calibration)
and find the latest one for `/v1/rank?fusion=calibrated`."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.errors import ApiError
from app.serialize import utc
from models_registry.tables import CalibrationRecord, Evaluation, ModelScore, PilotSet, RankingItem, RankingJob
from transferability.calibration import Calibration, CalibrationExample, calibration_report


def tenant_examples(session: Session, tenant: str) -> tuple[list[CalibrationExample], list[str]]:
    """One example per evaluated ranking of the tenant: its latest evaluation (the user's truth or a
    confirmation's), the ranking's raw scores of the models in that truth, and the task's K."""
    rows = session.execute(
        select(Evaluation, RankingJob.id, PilotSet.num_foreground)
        .join(RankingJob, RankingJob.id == Evaluation.ranking_id)
        .join(PilotSet, PilotSet.id == RankingJob.pilot_set_id)
        .where(RankingJob.tenant_id == tenant)
        .order_by(Evaluation.created_at.desc(), Evaluation.id.desc())
    ).all()
    latest: dict[str, tuple[Evaluation, int]] = {}
    for ev, ranking_id, k in rows:
        latest.setdefault(ranking_id, (ev, int(k)))
    examples, ids = [], []
    for ranking_id, (ev, k) in sorted(latest.items(), key=lambda kv: (kv[1][0].created_at, kv[1][0].id)):
        scores = dict(session.execute(
            select(RankingItem.model_id, ModelScore)
            .join(ModelScore, ModelScore.id == RankingItem.score_id)
            .where(RankingItem.ranking_id == ranking_id, RankingItem.model_id.in_(list(ev.truth)))
        ).all())
        truth = {m: float(v) for m, v in ev.truth.items() if m in scores}
        examples.append(CalibrationExample(scores={m: (sc.grtd, sc.lbtc) for m, sc in scores.items()}, truth=truth, num_foreground_classes=k))
        ids.append(ev.id)
    return examples, ids


def create_calibration(session: Session, tenant: str, kind: str) -> CalibrationRecord:
    """Fit and store the tenant's calibration; 409 while no evaluation is usable (the request is fine,
    the tenant's data is not there yet)."""
    examples, ids = tenant_examples(session, tenant)
    try:
        report = calibration_report(examples, kind=kind)
    except ValueError as exc:
        raise ApiError(409, "no_usable_evaluations",
                       f"{len(examples)} evaluated ranking(s), none usable for calibration: {exc}") from exc
    row = CalibrationRecord(tenant_id=tenant, params=report.calibration.to_dict(), report=report.to_dict(), evaluation_ids=ids)
    session.add(row)
    session.commit()
    return row


def latest_calibration(session: Session, tenant: str) -> CalibrationRecord | None:
    return session.scalar(
        select(CalibrationRecord).where(CalibrationRecord.tenant_id == tenant)
        .order_by(CalibrationRecord.created_at.desc(), CalibrationRecord.id.desc()).limit(1)
    )


def calibration_view(row: CalibrationRecord) -> dict[str, Any]:
    cal = Calibration.from_dict(row.params)
    rep = row.report
    return {
        "id": row.id, "kind": cal.kind, "a": cal.a, "b": cal.b, "alpha_by_k": {str(k): v for k, v in cal.alpha_by_k.items()},
        **{k: rep[k] for k in ("n_evaluations", "n_skipped", "distinct_k", "mean_tau_default", "mean_tau_fitted",
                               "loo_tau_default", "loo_tau_fitted", "loo", "warnings")},
        "evaluation_ids": list(row.evaluation_ids), "created_at": utc(row.created_at),
    }
