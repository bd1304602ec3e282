"""`GET /v1/rankings/{id}/report`: the registry's view of one ranking turned into `app.report.ReportData`
(fused ordering and uncertainty at read time, baselines, provenance, the latest evaluation)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.errors import ApiError, not_found
from app.ranking import baseline_value, fused_ranking, ranking_uncertainty
from app.report import ModelRow, ReportData, render_report
from app.serialize import utc
from models_registry.tables import Evaluation, PilotSet, RankingJob
from app.services.rankings import scored_items
from transferability.fusion import resolve_fusion


def _iso(moment: datetime | None) -> str | None:
    m = utc(moment)
    return m.isoformat(timespec="seconds") if m else None


def report_data(session: Session, job: RankingJob, *, partial: bool = False) -> ReportData:
    """Everything the report shows; 409 while the ranking is incomplete unless `partial`."""
    if job.status != "succeeded" and not partial:
        raise ApiError(409, "ranking_incomplete", f"ranking is {job.status}; retry later or pass partial=true")
    scores, names = scored_items(session, job)
    if not scores:
        raise ApiError(409, "no_scores", f"no model of this ranking has a score yet (status {job.status})")
    ps = session.get(PilotSet, job.pilot_set_id)
    if ps is None:
        raise not_found("pilot_set")
    fusion = resolve_fusion(job.fusion)
    ranked = fused_ranking(scores, names, ps.num_foreground, a=fusion.a, b=fusion.b, alpha=fusion.alpha)
    unc = ranking_uncertainty(scores, ranked["K"], a=fusion.a, b=fusion.b, alpha=fusion.alpha, keep_replicates=True)
    rows = []
    for m in ranked["models"]:
        sc = scores[m["model_id"]]
        diag = (sc.result or {}).get("diagnostics") or {}
        rows.append(ModelRow(
            model_id=m["model_id"], name=m["name"] or m["model_id"], rank=m["rank"], fused=m["fused"], grtd=m["grtd"], lbtc=m["lbtc"],
            baselines={k: baseline_value(v) for k, v in (sc.baselines or {}).items()},
            checkpoint_sha256=sc.checkpoint_sha256, code_version=sc.code_version, numeric_mode=sc.numeric_mode,
            device=diag.get("device"), scored_at=_iso(sc.created_at),
            uncertainty=(unc.get("models") or {}).get(m["model_id"]) if unc.get("available") else None,
            fused_replicates=(unc.get("fused_replicates") or {}).get(m["model_id"]),
        ))
    unc.pop("fused_replicates", None)
    ev = session.scalars(select(Evaluation).where(Evaluation.ranking_id == job.id).order_by(Evaluation.created_at.desc()).limit(1)).first()
    evaluation: dict[str, Any] | None = None
    if ev is not None:
        evaluation = {"id": ev.id, "created_at": _iso(ev.created_at), "truth": ev.truth, "metrics": ev.result}
    return ReportData(
        ranking_id=job.id, status=job.status, created_at=_iso(job.created_at) or "", pilot_set_name=ps.name, n_cases=len(ps.cases),
        labels=dict(ps.labels or {}), K=ranked["K"], alpha=ranked["alpha"], alpha_pinned=ranked["alpha_pinned"], a=ranked["a"],
        b=ranked["b"], config=dict(job.config), config_hash=job.config_hash, models=rows,
        missing=[names.get(it.model_id, it.model_id) for it in job.items if it.model_id not in scores],
        uncertainty=unc, evaluation=evaluation, generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def report_html(session: Session, job: RankingJob, *, partial: bool = False) -> str:
    """The self-contained HTML report of a ranking the caller owns."""
    return render_report(report_data(session, job, partial=partial))
