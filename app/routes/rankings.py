"""`/v1/rankings`, `/v1/rank` and evaluations: jobs, read-time fusion and validation metrics."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Response
from fastapi.responses import HTMLResponse
from sqlalchemy import select
from sqlalchemy.orm import selectinload
from starlette.concurrency import run_in_threadpool

from app.deps import Ctx, Db, OwnedRanking, TenantId
from app.openapi_doc import error_responses, json_error_responses, links_from_id
from app.serialize import utc
from app.schemas import EvaluationIn, EvaluationOut, RankingIn, RankingList, RankingOut, RankOut
from app.services import rank as rank_service
from app.services import report as report_service
from app.services import rankings as service
from models_registry.tables import RankingJob

router = APIRouter(prefix="/v1", tags=["rankings"])
_ERR = error_responses(401, 404, 409, 422, 429, 503)
_ERR_JSON_BODY = {**_ERR, **error_responses(400)}  # a body that is not JSON: `code` bad_request


@router.post(
    "/rankings",
    status_code=202,
    response_model=RankingOut,
    responses={**_ERR_JSON_BODY, **links_from_id(202, "ranking_id", "get_ranking", "cancel_ranking", "create_evaluation", "get_rank",
                                                 "create_confirmation")},
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
    started = service.create_ranking(session, tenant, body, idempotency_key, ctx.dispatcher, ctx.settings)
    if started.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = f"/v1/rankings/{started.job.id}"
    return service.job_view(session, started.job)


@router.get("/rankings", response_model=RankingList, responses=_ERR, summary="Your rankings, newest first")
def list_rankings(session: Db, tenant: TenantId, limit: Annotated[int, Query(ge=1, le=200)] = 50) -> dict[str, Any]:
    jobs = session.scalars(
        select(RankingJob)
        .where(RankingJob.tenant_id == tenant)
        .order_by(RankingJob.created_at.desc(), RankingJob.id)
        .limit(limit)
        .options(selectinload(RankingJob.items))
    ).all()
    return {"rankings": service.jobs_view(session, list(jobs))}


@router.get("/rankings/{ranking_id}", response_model=RankingOut, responses=_ERR, summary="Status, progress and per-model scores")
def get_ranking(job: OwnedRanking, session: Db) -> dict[str, Any]:
    return service.job_view(session, job)


@router.post("/rankings/{ranking_id}/cancel", status_code=202, response_model=RankingOut, responses=_ERR, summary="Cancel a ranking")
def cancel_ranking(job: OwnedRanking, session: Db) -> dict[str, Any]:
    return service.job_view(session, service.cancel_ranking(session, job))


@router.get(
    "/rank",
    response_model=RankOut,
    responses=_ERR,
    summary="The fused ordering of a ranking",
    description=(
        "Computed at read time (metrics.md §5) over the ranking's models: alpha = sigmoid(a (ln K - b)) "
        "unless pinned, min-max normalised GRTD and LBTC, S = alpha N(GRTD) + (1 - alpha) N(LBTC). "
        "409 with Retry-After while the ranking is incomplete, unless `partial=true` (then over the "
        "models scored so far, the others listed in `missing`). `uncertainty` (omitted with "
        "`uncertainty=false`): each model's half-sampling replicates over the pilot cases, fused per "
        "replicate: 95% intervals of GRTD, LBTC and the fused score, rank intervals, P(rank 1), "
        "P(row model above column model), and `stable` (the top model is first in >= 90% of replicates). "
        "`fusion=calibrated` uses the tenant's latest calibration (POST /v1/calibrations; 409 without one); "
        "`gate` always says which gate was used."
    ),
)
async def get_rank(
    tenant: TenantId,
    ctx: Ctx,
    ranking_id: str,
    partial: bool = False,
    alpha: Annotated[float | None, Query(ge=0, le=1)] = None,
    a: float | None = None,
    b: float | None = None,
    uncertainty: bool = True,
    fusion: Literal["ranking", "calibrated"] = "ranking",
) -> Response:
    overrides = {"alpha": alpha, "a": a, "b": b}
    body = rank_service.cached_rank_body(ctx.rank_cache, tenant, ranking_id, partial, overrides, uncertainty, fusion)
    if body is None:
        body = await run_in_threadpool(
            rank_service.rank_body, ctx.sessions, ctx.rank_cache, tenant, ranking_id, partial, overrides, uncertainty, fusion
        )
    return Response(content=body, media_type="application/json")


@router.get(
    "/rankings/{ranking_id}/report",
    response_class=HTMLResponse,
    responses={**json_error_responses(401, 404, 409, 422, 429, 503),
               200: {"content": {"text/html": {}}, "description": "One self-contained HTML page"}},
    summary="The ranking's report: one self-contained HTML page",
    description=(
        "Figures (inline SVG): the fused ranking with 95% intervals, GRTD against LBTC, P(above) and the spread over "
        "pilot-case half-samples; the baselines; the task, config and provenance (checkpoint sha256, code version, "
        "device); the latest evaluation against fine-tuning results. No scripts, fonts or remote assets. 409 while the "
        "ranking is incomplete unless `partial=true`."
    ),
)
def get_report(job: OwnedRanking, session: Db, partial: bool = False) -> HTMLResponse:
    return HTMLResponse(report_service.report_html(session, job, partial=partial))


@router.post(
    "/rankings/{ranking_id}/evaluation",
    status_code=201,
    response_model=EvaluationOut,
    responses=_ERR_JSON_BODY,
    summary="Compare the ranking with fine-tuning results",
    description="`truth`: model id -> Dice. Weighted tau (metrics.md §7), Kendall tau-b, Spearman and top-1 regret "
    "for the fused score, GRTD, LBTC and every baseline, over the models with both a score and a truth value.",
)
def create_evaluation(job: OwnedRanking, body: EvaluationIn, session: Db) -> dict[str, Any]:
    ev, n_models = service.evaluate_job(session, job, body.truth)
    return {"id": ev.id, "ranking_id": job.id, "n_models": n_models, "metrics": ev.result, "created_at": utc(ev.created_at)}
