"""`/v1/rankings`, `/v1/rank` and evaluations: jobs, read-time fusion and validation metrics."""

from __future__ import annotations

import hashlib
import json
import logging
import math
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response
from fastapi.responses import JSONResponse
from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.deps import Ctx, Db, TenantId
from app.errors import ApiError, not_found
from app.context import AppContext, RankCache
from app.ranking import evaluate_ranking, fused_ranking
from app.routes.pilot_sets import owned_pilot_set
from app.schemas import ErrorBody, EvaluationIn, EvaluationOut, RankingIn, RankingList, RankingOut, RankOut
from app.serialize import ranking_dict
from models_registry.jobs import refresh_job
from models_registry.tables import TERMINAL_JOB, Evaluation, Model, ModelScore, PilotSet, RankingItem, RankingJob, utcnow
from transferability.config import ScoringConfig

log = logging.getLogger("toporank.api")
router = APIRouter(prefix="/v1", tags=["rankings"])
_ERR = {r: {"model": ErrorBody} for r in (401, 404, 409, 422, 503)}
RETRY_AFTER_S = "5"


def owned_job(session: Session, tenant: str, ranking_id: str) -> RankingJob:
    job = session.get(RankingJob, ranking_id)
    if job is None or job.tenant_id != tenant:
        raise not_found("ranking")
    return job


def _job_view(session: Session, job: RankingJob) -> dict[str, Any]:
    model_ids = [it.model_id for it in job.items]
    names = dict(session.execute(select(Model.id, Model.name).where(Model.id.in_(model_ids))).all()) if model_ids else {}
    score_ids = [it.score_id for it in job.items if it.score_id]
    scores = {s.id: s for s in session.scalars(select(ModelScore).where(ModelScore.id.in_(score_ids)))} if score_ids else {}
    return ranking_dict(job, names, scores)


def _request_hash(body: RankingIn) -> str:
    return hashlib.sha256(json.dumps(body.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


def _replay(session: Session, tenant: str, key: str, request_hash: str) -> RankingJob | None:
    job = session.scalar(select(RankingJob).where(RankingJob.tenant_id == tenant, RankingJob.idempotency_key == key))
    if job is None:
        return None
    if job.request_hash != request_hash:
        raise ApiError(409, "idempotency_conflict", "Idempotency-Key was already used with a different request body")
    return job


@router.post(
    "/rankings",
    status_code=202,
    response_model=RankingOut,
    responses=_ERR,
    summary="Start a ranking",
    description=(
        "One worker task per model (ids only in messages). A model already scored on this pilot set "
        "with the same config hash reuses its stored score (`reused: true`) with no recomputation. "
        "An `Idempotency-Key` header replays the first response for the same body, 409 for another body."
    ),
)
def create_ranking(
    body: RankingIn,
    response: Response,
    session: Db,
    tenant: TenantId,
    ctx: Ctx,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> dict[str, Any]:
    request_hash = _request_hash(body)
    if idempotency_key:
        existing = _replay(session, tenant, idempotency_key, request_hash)
        if existing is not None:
            response.headers["Idempotent-Replayed"] = "true"
            response.headers["Location"] = f"/v1/rankings/{existing.id}"
            return _job_view(session, existing)
    ps = owned_pilot_set(session, tenant, body.pilot_set_id)
    if len(set(body.model_ids)) != len(body.model_ids):
        raise ApiError(422, "duplicate_models", "model_ids holds duplicates")
    models = {
        m.id: m
        for m in session.scalars(
            select(Model).where(Model.id.in_(body.model_ids), or_(Model.tenant_id == tenant, Model.tenant_id.is_(None)))
        )
    }
    missing = [mid for mid in body.model_ids if mid not in models]
    if missing:
        raise ApiError(404, "model_not_found", "some models do not exist", errors=[{"field": f"model_ids.{m}", "problem": "not found"} for m in missing])
    invalid = [m for m in models.values() if m.status == "invalid"]
    if invalid:
        raise ApiError(
            422,
            "model_invalid",
            "some models failed validation and cannot be ranked",
            errors=[{"field": f"model_ids.{m.id}", "problem": f"{m.error_code}: {m.error_detail}"} for m in invalid],
        )
    try:
        config = ScoringConfig.from_dict(body.config)
    except (ValueError, TypeError) as exc:
        raise ApiError(422, "invalid_config", str(exc)) from exc
    fusion = body.fusion.model_dump() if body.fusion else {"a": 6.0, "b": None, "alpha": None}
    config_hash = config.hash()
    job = RankingJob(
        tenant_id=tenant,
        pilot_set_id=ps.id,
        config=config.to_dict(),
        config_hash=config_hash,
        fusion=fusion,
        status="queued",
        idempotency_key=idempotency_key,
        request_hash=request_hash,
    )
    existing_scores = dict(
        session.execute(
            select(ModelScore.model_id, ModelScore.id).where(
                ModelScore.pilot_set_id == ps.id, ModelScore.config_hash == config_hash, ModelScore.model_id.in_(body.model_ids)
            )
        ).all()
    )
    now = utcnow()
    for pos, mid in enumerate(body.model_ids):
        item = RankingItem(model_id=mid, position=pos, status="queued", progress=0.0, attempts=0, reused=False)
        if mid in existing_scores:
            item.status, item.score_id, item.reused, item.progress, item.finished_at = "succeeded", existing_scores[mid], True, 1.0, now
        job.items.append(item)
    session.add(job)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        if idempotency_key:
            existing = _replay(session, tenant, idempotency_key, request_hash)
            if existing is not None:
                response.headers["Idempotent-Replayed"] = "true"
                return _job_view(session, existing)
        raise
    refresh_job(session, job.id)
    session.commit()
    pending = [it.id for it in job.items if it.status == "queued"]
    try:
        for item_id in pending:
            ctx.dispatcher.score_item(item_id)
    except Exception as exc:
        for it in job.items:
            if it.status == "queued":
                it.status, it.error_code, it.error_detail = "failed", "broker_unavailable", "task queue unreachable"
        refresh_job(session, job.id)
        session.commit()
        raise ApiError(503, "broker_unavailable", f"task queue unreachable; ranking {job.id} failed") from exc
    response.headers["Location"] = f"/v1/rankings/{job.id}"
    return _job_view(session, job)


@router.get("/rankings", response_model=RankingList, responses=_ERR, summary="Your rankings, newest first")
def list_rankings(session: Db, tenant: TenantId, limit: Annotated[int, Query(ge=1, le=200)] = 50) -> dict[str, Any]:
    jobs = session.scalars(
        select(RankingJob).where(RankingJob.tenant_id == tenant).order_by(RankingJob.created_at.desc(), RankingJob.id).limit(limit)
    ).all()
    return {"rankings": [_job_view(session, j) for j in jobs]}


@router.get("/rankings/{ranking_id}", response_model=RankingOut, responses=_ERR, summary="Status, progress and per-model scores")
def get_ranking(ranking_id: str, session: Db, tenant: TenantId) -> dict[str, Any]:
    return _job_view(session, owned_job(session, tenant, ranking_id))


@router.post("/rankings/{ranking_id}/cancel", status_code=202, response_model=RankingOut, responses=_ERR, summary="Cancel a ranking")
def cancel_ranking(ranking_id: str, session: Db, tenant: TenantId) -> dict[str, Any]:
    job = owned_job(session, tenant, ranking_id)
    if job.status in TERMINAL_JOB:
        raise ApiError(409, "ranking_finished", f"ranking already {job.status}")
    job.cancel_requested = True
    now = utcnow()
    for it in job.items:
        if it.status == "queued":
            it.status, it.finished_at = "cancelled", now
    session.flush()
    refresh_job(session, job.id)
    session.commit()
    return _job_view(session, job)


def _num_foreground(session: Session, job: RankingJob) -> int:
    k = session.scalar(select(PilotSet.num_foreground).where(PilotSet.id == job.pilot_set_id))
    if k is None:
        raise not_found("pilot_set")
    return int(k)


def _scored_items(session: Session, job: RankingJob) -> tuple[dict[str, ModelScore], dict[str, str]]:
    rows = session.execute(
        select(RankingItem.model_id, ModelScore, Model.name)
        .join(ModelScore, ModelScore.id == RankingItem.score_id)
        .join(Model, Model.id == RankingItem.model_id)
        .where(RankingItem.ranking_id == job.id, RankingItem.status == "succeeded")
    ).all()
    return {mid: sc for mid, sc, _ in rows}, {mid: name for mid, _, name in rows}


@router.get(
    "/rank",
    response_model=RankOut,
    responses=_ERR,
    summary="The fused ordering of a ranking",
    description=(
        "Computed at read time (metrics.md §5) over the ranking's models: alpha = sigmoid(a (ln K - b)) "
        "unless pinned, min-max normalised GRTD and LBTC, S = alpha N(GRTD) + (1 - alpha) N(LBTC). "
        "409 with Retry-After while the ranking is incomplete, unless `partial=true` (then over the "
        "models scored so far, the others listed in `missing`)."
    ),
)
async def rank(
    tenant: TenantId,
    ctx: Ctx,
    ranking_id: str,
    partial: bool = False,
    alpha: Annotated[float | None, Query(ge=0, le=1)] = None,
    a: float | None = None,
    b: float | None = None,
) -> Response:
    head = ctx.rank_cache.head(ranking_id)
    body = None
    if head is not None and head.tenant_id == tenant:
        body = ctx.rank_cache.get(_body_key(ranking_id, head, partial, alpha, a, b))
    if body is None:
        body = await run_in_threadpool(_rank_body, ctx, tenant, ranking_id, partial, alpha, a, b)
    return Response(content=body, media_type="application/json")


def _fusion_params(head: Any, alpha: float | None, a: float | None, b: float | None) -> tuple[float | None, float, float]:
    fusion = dict(head.fusion or {})
    a_val = float(a if a is not None else fusion.get("a", 6.0))
    b_raw = b if b is not None else fusion.get("b")
    b_val = float(b_raw) if b_raw is not None else math.log(2.5)
    alpha_val = alpha if alpha is not None else fusion.get("alpha")
    return alpha_val, a_val, b_val


def _body_key(ranking_id: str, head: Any, partial: bool, alpha: float | None, a: float | None, b: float | None) -> tuple[Any, ...]:
    stamp = head.updated_at.isoformat() if head.updated_at else ""
    return (ranking_id, stamp, head.status, partial, *_fusion_params(head, alpha, a, b))


def _rank_body(
    ctx: AppContext, tenant: str, ranking_id: str, partial: bool, alpha: float | None, a: float | None, b: float | None
) -> bytes:
    """The serialized fused ranking; finished rankings are served from the cache after one PK lookup."""
    with ctx.sessions() as session:
        head = session.execute(
            select(RankingJob.tenant_id, RankingJob.status, RankingJob.fusion, RankingJob.updated_at).where(RankingJob.id == ranking_id)
        ).first()
        if head is None or head.tenant_id != tenant:
            raise not_found("ranking")
        status = head.status
        if status != "succeeded" and not partial:
            headers = {"Retry-After": RETRY_AFTER_S} if status not in TERMINAL_JOB else None
            raise ApiError(409, "ranking_incomplete", f"ranking is {status}; retry later or pass partial=true", headers=headers)
        alpha_val, a_val, b_val = _fusion_params(head, alpha, a, b)
        key = _body_key(ranking_id, head, partial, alpha, a, b)
        cache: RankCache = ctx.rank_cache
        if status in TERMINAL_JOB:
            cache.put_head(ranking_id, head)
        body = cache.get(key) if status in TERMINAL_JOB else None
        if body is not None:
            return body
        job = owned_job(session, tenant, ranking_id)
        scores, names = _scored_items(session, job)
        if not scores:
            headers = {"Retry-After": RETRY_AFTER_S} if status not in TERMINAL_JOB else None
            raise ApiError(409, "no_scores", f"no model of this ranking has a score yet (status {status})", headers=headers)
        out = fused_ranking(scores, names, _num_foreground(session, job), a=a_val, b=b_val, alpha=alpha_val)
        out.update(
            ranking_id=job.id,
            status=status,
            partial=status != "succeeded",
            missing=[it.model_id for it in job.items if it.model_id not in scores],
        )
        body = json.dumps(out, separators=(",", ":")).encode()
        if status in TERMINAL_JOB:
            cache.put(key, body)
        return body


@router.post(
    "/rankings/{ranking_id}/evaluation",
    status_code=201,
    response_model=EvaluationOut,
    responses=_ERR,
    summary="Compare the ranking with fine-tuning results",
    description="`truth`: model id -> Dice. Weighted tau (metrics.md §7), Kendall tau-b, Spearman and top-1 regret "
    "for the fused score, GRTD, LBTC and every baseline, over the models with both a score and a truth value.",
)
def evaluate(ranking_id: str, body: EvaluationIn, session: Db, tenant: TenantId, ctx: Ctx) -> dict[str, Any]:
    job = owned_job(session, tenant, ranking_id)
    members = {it.model_id for it in job.items}
    unknown = [m for m in body.truth if m not in members]
    if unknown:
        raise ApiError(422, "unknown_models", "truth names models outside this ranking",
                       errors=[{"field": f"truth.{m}", "problem": "not in this ranking"} for m in unknown])
    bad = [m for m, v in body.truth.items() if not math.isfinite(v)]
    if bad:
        raise ApiError(422, "invalid_truth", "truth values must be finite numbers")
    scores, _names = _scored_items(session, job)
    usable = {m: v for m, v in body.truth.items() if m in scores}
    if len(usable) < 2:
        raise ApiError(409, "too_few_scored_models", "at least two models need both a score and a truth value")
    ps_k = _num_foreground(session, job)
    fusion = job.fusion or {}
    b_val = fusion.get("b")
    metrics = evaluate_ranking(
        {m: scores[m] for m in usable}, usable, ps_k, a=float(fusion.get("a", 6.0)),
        b=float(b_val) if b_val is not None else math.log(2.5), alpha=fusion.get("alpha"),
    )
    ev = Evaluation(ranking_id=job.id, truth=dict(body.truth), result=metrics)
    session.add(ev)
    session.commit()
    return {"id": ev.id, "ranking_id": job.id, "n_models": len(usable), "metrics": metrics, "created_at": ev.created_at}
