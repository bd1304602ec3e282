"""Ranking jobs: start one (idempotent, reusing stored scores), cancel it, view it, evaluate it
against fine-tuning results."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.errors import ApiError, not_found
from app.limits import ensure_ranking_slot
from app.ranking import evaluate_ranking
from app.schemas import FusionParams, RankingIn
from app.serialize import ranking_dict
from app.services.lookups import owned_pilot_set, storable
from models_registry.jobs import refresh_job
from models_registry.scores import score_ids_by_model
from models_registry.tables import TERMINAL_JOB, Evaluation, Model, ModelScore, PilotSet, RankingItem, RankingJob, utcnow
from transferability.config import ScoringConfig, numeric_mode
from transferability.fusion import resolve_fusion

if TYPE_CHECKING:
    from app.context import Dispatcher
    from toporank.settings import Settings


@dataclass(frozen=True)
class Started:
    """A ranking `create_ranking` returns: new, or the first one replayed for its Idempotency-Key."""

    job: RankingJob
    replayed: bool


def job_view(session: Session, job: RankingJob) -> dict[str, Any]:
    """The `RankingOut` body of `job`: its items with model names and stored scores."""
    return jobs_view(session, [job])[0]


def jobs_view(session: Session, jobs: list[RankingJob]) -> list[dict[str, Any]]:
    """`RankingOut` bodies of `jobs`, their model names and scores read in one query each (a
    listing of 50 rankings is 3 queries, not 150)."""
    items = [it for job in jobs for it in job.items]
    model_ids = {it.model_id for it in items}
    names = dict(session.execute(select(Model.id, Model.name).where(Model.id.in_(model_ids))).all()) if model_ids else {}
    score_ids = {it.score_id for it in items if it.score_id}
    scores = {s.id: s for s in session.scalars(select(ModelScore).where(ModelScore.id.in_(score_ids)))} if score_ids else {}
    return [ranking_dict(job, names, scores) for job in jobs]


def request_hash(body: RankingIn) -> str:
    """What an Idempotency-Key is bound to: the canonical JSON of the request body."""
    return hashlib.sha256(json.dumps(body.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


def find_replay(session: Session, tenant: str, key: str, body_hash: str) -> RankingJob | None:
    """The job first created with this Idempotency-Key, None if there is none; 409 if it was for another body."""
    if not storable(key):
        raise ApiError(422, "invalid_idempotency_key", "Idempotency-Key holds characters that cannot be stored")
    job = session.scalar(select(RankingJob).where(RankingJob.tenant_id == tenant, RankingJob.idempotency_key == key))
    if job is None:
        return None
    if job.request_hash != body_hash:
        raise ApiError(409, "idempotency_conflict", "Idempotency-Key was already used with a different request body")
    return job


def _rankable_models(session: Session, tenant: str, model_ids: list[str]) -> dict[str, Model]:
    """The requested models, each visible to the tenant and not invalid (404 / 422 otherwise)."""
    if len(set(model_ids)) != len(model_ids):
        raise ApiError(422, "duplicate_models", "model_ids holds duplicates")
    queryable = [m for m in model_ids if storable(m)]
    models = {
        m.id: m
        for m in session.scalars(select(Model).where(Model.id.in_(queryable), or_(Model.tenant_id == tenant, Model.tenant_id.is_(None))))
    }
    missing = [mid for mid in model_ids if mid not in models]
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
    return models


def _parse_config(raw: Mapping[str, Any] | None) -> ScoringConfig:
    try:
        return ScoringConfig.from_dict(raw)
    except (ValueError, TypeError) as exc:
        raise ApiError(422, "invalid_config", str(exc)) from exc


def expected_numeric_mode(device: str, config: ScoringConfig) -> str | None:
    """The numeric mode the deployment's workers will score `config` in, when the API can know it:
    `TOPORANK_DEVICE` is `cpu` or `cuda`. With `auto` it is None and reuse waits for the worker,
    which knows its device (`serve` resolves `auto` before it starts, so the embedded mode knows)."""
    return None if device == "auto" else numeric_mode(device, config.precision)


def _new_job(
    session: Session, tenant: str, ps: PilotSet, body: RankingIn, config: ScoringConfig, key: str | None, body_hash: str, device: str
) -> RankingJob:
    """The job with one item per model; a model already scored on this pilot set with this config
    hash, in the numeric mode the workers will use, gets its stored score (`reused`) instead of a
    queued item."""
    config_hash = config.hash()
    job = RankingJob(
        tenant_id=tenant,
        pilot_set_id=ps.id,
        config=config.to_dict(),
        config_hash=config_hash,
        fusion=(body.fusion or FusionParams()).model_dump(),
        status="queued",
        idempotency_key=key,
        request_hash=body_hash,
    )
    mode = expected_numeric_mode(device, config)
    existing_scores = score_ids_by_model(session, ps.id, config_hash, mode, body.model_ids) if mode else {}
    now = utcnow()
    for pos, mid in enumerate(body.model_ids):
        item = RankingItem(model_id=mid, position=pos, status="queued", progress=0.0, attempts=0, reused=False)
        if mid in existing_scores:
            item.status, item.score_id, item.reused, item.progress, item.finished_at = "succeeded", existing_scores[mid], True, 1.0, now
        job.items.append(item)
    return job


def dispatch_queued(
    session: Session, units: list[Any], send: Callable[[str], None], refresh: Callable[[Session, str], Any], parent_id: str, what: str
) -> None:
    """Send the queued units (ranking items, confirmation folds) to the workers with `send`; if the
    broker is down, fail the ones still queued, refresh their parent and answer 503."""
    pending = [it.id for it in units if it.status == "queued"]
    try:
        for unit_id in pending:
            send(unit_id)
    except Exception as exc:
        now = utcnow()
        for it in units:
            if it.status == "queued":
                it.status, it.error_code, it.error_detail, it.finished_at = "failed", "broker_unavailable", "task queue unreachable", now
        refresh(session, parent_id)
        session.commit()
        raise ApiError(503, "broker_unavailable", f"task queue unreachable; {what} {parent_id} failed") from exc


def create_ranking(
    session: Session, tenant: str, body: RankingIn, idempotency_key: str | None, dispatcher: Dispatcher, settings: Settings
) -> Started:
    """Start a ranking of `body.model_ids` on the tenant's pilot set, or replay the one this
    Idempotency-Key started (also when a concurrent request with the same key won the insert).
    `settings.device` is the workers' device (see `expected_numeric_mode`); a tenant already at
    `settings.quota_concurrent_rankings` rankings in flight gets 429."""
    body_hash = request_hash(body)
    if idempotency_key:
        existing = find_replay(session, tenant, idempotency_key, body_hash)
        if existing is not None:
            return Started(existing, replayed=True)
    ps = owned_pilot_set(session, tenant, body.pilot_set_id)
    _rankable_models(session, tenant, body.model_ids)
    ensure_ranking_slot(session, tenant, settings.quota_concurrent_rankings)
    job = _new_job(session, tenant, ps, body, _parse_config(body.config), idempotency_key, body_hash, settings.device)
    session.add(job)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        existing = find_replay(session, tenant, idempotency_key, body_hash) if idempotency_key else None
        if existing is None:
            raise
        return Started(existing, replayed=True)
    refresh_job(session, job.id)
    session.commit()
    dispatch_queued(session, list(job.items), dispatcher.score_item, refresh_job, job.id, "ranking")
    return Started(job, replayed=False)


def cancel_ranking(session: Session, job: RankingJob) -> RankingJob:
    """Ask the workers to stop and cancel the items still queued; 409 once the job has finished."""
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
    return job


def num_foreground(session: Session, job: RankingJob) -> int:
    """K of the job's pilot set (foreground classes), which gates the fusion."""
    n_foreground = session.scalar(select(PilotSet.num_foreground).where(PilotSet.id == job.pilot_set_id))
    if n_foreground is None:
        raise not_found("pilot_set")
    return int(n_foreground)


def scored_items(session: Session, job: RankingJob) -> tuple[dict[str, ModelScore], dict[str, str]]:
    """model id -> stored score and model id -> name, over the job's succeeded items."""
    rows = session.execute(
        select(RankingItem.model_id, ModelScore, Model.name)
        .join(ModelScore, ModelScore.id == RankingItem.score_id)
        .join(Model, Model.id == RankingItem.model_id)
        .where(RankingItem.ranking_id == job.id, RankingItem.status == "succeeded")
    ).all()
    return {mid: sc for mid, sc, _ in rows}, {mid: name for mid, _, name in rows}


def evaluate_job(session: Session, job: RankingJob, truth: Mapping[str, float]) -> tuple[Evaluation, int]:
    """Store the validation metrics of the job's scores against `truth` (model id -> Dice); also
    return how many models had both a score and a truth value."""
    members = {it.model_id for it in job.items}
    unknown = [m for m in truth if m not in members]
    if unknown:
        raise ApiError(422, "unknown_models", "truth names models outside this ranking",
                       errors=[{"field": f"truth.{m}", "problem": "not in this ranking"} for m in unknown])
    if any(not math.isfinite(v) for v in truth.values()):
        raise ApiError(422, "invalid_truth", "truth values must be finite numbers")
    scores, _names = scored_items(session, job)
    usable = {m: v for m, v in truth.items() if m in scores}
    if len(usable) < 2:
        raise ApiError(409, "too_few_scored_models", "at least two models need both a score and a truth value")
    fusion = resolve_fusion(job.fusion)
    metrics = evaluate_ranking({m: scores[m] for m in usable}, usable, num_foreground(session, job), a=fusion.a, b=fusion.b, alpha=fusion.alpha)
    ev = Evaluation(ranking_id=job.id, truth=dict(truth), result=metrics)
    session.add(ev)
    session.commit()
    return ev, len(usable)
