"""Confirmations: fine-tune a finished ranking's top models by cross-validation over its pilot
cases (one worker task per model and fold), read the held-out Dice back, cancel.

The worker records the evaluation when the last fold finishes (models_registry.confirmations);
fine-tune records are reused under the same key, like scores.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.errors import ApiError
from app.schemas import ConfirmationIn
from app.serialize import utc
from app.services.rankings import dispatch_queued, num_foreground, scored_items
from models_registry.confirmations import (
    default_folds,
    fold_results,
    fold_plan,
    fold_seed,
    record_ids_by_unit,
    record_key,
    refresh_confirmation,
    summaries,
    top1_verdict,
)
from models_registry.jobs import derive_status
from models_registry.finetune_config import FINETUNE_CODE_VERSION, FinetuneConfig
from models_registry.finetune_cost import expected_cost
from models_registry.tables import (
    TERMINAL_JOB,
    Confirmation,
    ConfirmationItem,
    Evaluation,
    Model,
    PilotSet,
    RankingJob,
    utcnow,
)
from transferability.fusion import fuse, resolve_fusion

if TYPE_CHECKING:
    from app.context import Dispatcher
    from toporank.settings import Settings

DEFAULT_TOP_K = 2


def predicted_order(session: Session, job: RankingJob) -> list[str]:
    """The ranking's scored models in its fused order (its own stored fusion parameters)."""
    scores, _names = scored_items(session, job)
    if not scores:
        return []
    fusion = resolve_fusion(job.fusion)
    fused = fuse({m: (s.grtd, s.lbtc) for m, s in scores.items()}, num_foreground(session, job), a=fusion.a, b=fusion.b, alpha=fusion.alpha)
    return [str(m.model_id) for m in fused.models]


def _chosen_models(body: ConfirmationIn, order: list[str]) -> list[str]:
    if body.models is not None and body.top_k is not None:
        raise ApiError(422, "invalid_request", "give top_k or models, not both")
    if body.models is not None:
        if len(set(body.models)) != len(body.models):
            raise ApiError(422, "duplicate_models", "models holds duplicates")
        outside = [m for m in body.models if m not in order]
        if outside:
            raise ApiError(422, "model_not_scored", "some models are not scored in this ranking",
                           errors=[{"field": f"models.{m}", "problem": "not a scored model of this ranking"} for m in outside])
        return list(body.models)
    k = body.top_k or DEFAULT_TOP_K
    if k > len(order):
        raise ApiError(422, "top_k_too_large", f"top_k is {k} but the ranking has {len(order)} scored model(s)")
    return order[:k]


def transfer_recipe(steps: int) -> dict[str, Any]:
    """Defaults a confirmation adds to FinetuneConfig's: the validation benchmark's truth protocol
    (bench/validation/profiles.TRANSFER_FINETUNE: the first half of the steps with the encoder frozen,
    then the encoder at a tenth of the rate; decisions.md "Fine-tuning"), and the worker's own torch
    threads (`threads` None) instead of one."""
    return {"encoder_warmup_steps": steps // 2, "encoder_lr_scale": 0.1, "threads": None}


def _finetune_config(body: ConfirmationIn, settings: Settings) -> FinetuneConfig:
    if body.steps > settings.max_finetune_steps:
        raise ApiError(422, "steps_over_cap", f"steps {body.steps} is above this deployment's cap of {settings.max_finetune_steps}")
    overrides = dict(body.finetune or {})
    for key in ("steps", "seed"):
        if key in overrides:
            raise ApiError(422, "invalid_finetune_config", f"set {key} at the top level of the request, not in finetune")
    try:
        return FinetuneConfig.from_dict({**transfer_recipe(body.steps), **overrides, "steps": body.steps, "seed": body.seed})
    except (ValueError, TypeError) as exc:
        raise ApiError(422, "invalid_finetune_config", str(exc)) from exc


def create_confirmation(session: Session, tenant: str, job: RankingJob, body: ConfirmationIn, dispatcher: Dispatcher,
                        settings: Settings) -> Confirmation:
    """Queue one fine-tune per (chosen model, fold); units already fine-tuned under the same key on
    the workers' device kind are reused at once. 409 while the ranking has not finished."""
    if job.status not in TERMINAL_JOB or job.status == "cancelled":
        raise ApiError(409, "ranking_not_finished", f"ranking is {job.status}: confirm a succeeded or partial ranking")
    order = predicted_order(session, job)
    models = _chosen_models(body, order)
    cfg = _finetune_config(body, settings)
    ps = session.get(PilotSet, job.pilot_set_id)
    n_cases = len(ps.cases) if ps is not None else 0
    if n_cases < 2:
        raise ApiError(422, "too_few_cases", f"cross-validation needs at least 2 pilot cases; this pilot set has {n_cases}")
    folds = body.folds or default_folds(n_cases)
    if folds > n_cases:
        raise ApiError(422, "too_many_folds", f"folds ({folds}) cannot exceed the pilot set's {n_cases} cases")
    plan = fold_plan(n_cases, folds, body.seed)
    fold_cfgs = [FinetuneConfig.from_dict({**cfg.to_dict(), "seed": fold_seed(body.seed, f)}).to_dict() for f in range(folds)]
    keys = [record_key(plan, f, fold_cfgs[f], FINETUNE_CODE_VERSION) for f in range(folds)]
    device = settings.device if settings.device in ("cpu", "cuda") else None
    reusable = record_ids_by_unit(session, ps.id, device, [(m, k) for m in models for k in keys]) if device and ps else {}
    stages = dict(session.execute(select(Model.id, Model.stages).where(Model.id.in_(models))).all())
    costs = {m: expected_cost(stages.get(m) or [], device or "auto", cfg.steps, cfg.patch, cfg.batch_size, [len(f) for f in plan])
             for m in models}
    known = [c["seconds_per_model"] for c in costs.values()]
    conf = Confirmation(
        tenant_id=tenant, ranking_id=job.id, model_ids=models, predicted_top=order[0] if order else None, fold_plan=plan,
        config={**cfg.to_dict(), "base_seed": body.seed, "code_version": FINETUNE_CODE_VERSION},
        expected_cost={"seconds": sum(known) if all(v is not None for v in known) else None, "per_model": costs},
        status="queued", cancel_requested=False,
    )
    now = utcnow()
    for pos, (m, f) in enumerate((m, f) for m in models for f in range(folds)):
        unit = ConfirmationItem(model_id=m, fold=f, position=pos, key_hash=keys[f], status="queued", progress=0.0, attempts=0, reused=False)
        if (m, keys[f]) in reusable:
            unit.status, unit.record_id, unit.reused, unit.progress, unit.finished_at = "succeeded", reusable[(m, keys[f])], True, 1.0, now
        conf.items.append(unit)
    session.add(conf)
    session.flush()
    refresh_confirmation(session, conf.id)
    session.commit()
    dispatch_queued(session, list(conf.items), dispatcher.finetune_item, refresh_confirmation, conf.id, "confirmation")
    return conf


def cancel_confirmation(session: Session, conf: Confirmation) -> Confirmation:
    """Ask the workers to stop and cancel the folds still queued; 409 once it has finished."""
    if conf.finished_at is not None:
        raise ApiError(409, "confirmation_finished", f"confirmation already {conf.status}")
    conf.cancel_requested = True
    now = utcnow()
    for it in conf.items:
        if it.status == "queued":
            it.status, it.finished_at = "cancelled", now
    refresh_confirmation(session, conf.id)
    session.commit()
    return conf


def _evaluation_view(session: Session, conf: Confirmation) -> dict[str, Any] | None:
    if conf.evaluation_id is None:
        return None
    ev = session.get(Evaluation, conf.evaluation_id)
    if ev is None:
        return None
    return {"id": ev.id, "ranking_id": ev.ranking_id, "n_models": len(ev.truth), "metrics": ev.result, "created_at": utc(ev.created_at)}


def confirmation_view(session: Session, conf: Confirmation) -> dict[str, Any]:
    """The `ConfirmationOut` body: progress and held-out Dice per model and fold, the top-1 verdict, the evaluation."""
    job = session.get(RankingJob, conf.ranking_id)
    order = predicted_order(session, job) if job is not None else []
    names = dict(session.execute(select(Model.id, Model.name).where(Model.id.in_(conf.model_ids))).all())
    ps = session.get(PilotSet, job.pilot_set_id) if job is not None else None
    case_ids = [c.id for c in ps.cases] if ps is not None else []
    done = fold_results(session, conf)
    per_model = summaries(session, conf, done)
    best_verdict, best, note = top1_verdict(conf.predicted_top, per_model)
    models = []
    for m in conf.model_ids:
        units = [it for it in conf.items if it.model_id == m]
        folds = []
        for it in sorted(units, key=lambda u: u.fold):
            rec = done.get(m, {}).get(it.fold)
            folds.append({
                "fold": it.fold, "status": it.status, "stage": it.stage, "progress": it.progress, "attempts": it.attempts,
                "reused": it.reused, "n_test": len(conf.fold_plan[it.fold]),
                "dice": rec.dice if rec else None, "per_class": rec.per_class if rec else None,
                "error": {"code": it.error_code, "detail": it.error_detail} if it.error_code else None,
            })
        statuses = [u.status for u in units]
        models.append({
            "model_id": m, "name": names.get(m), "predicted_rank": order.index(m) + 1 if m in order else None,
            "status": derive_status(statuses, conf.cancel_requested),
            "progress": sum(1.0 if u.status in ("succeeded", "failed", "cancelled") else u.progress for u in units) / max(len(units), 1),
            **{k: per_model.get(m, {}).get(k) for k in ("dice_mean", "dice_std", "dice_se")},
            "n_folds_done": per_model.get(m, {}).get("n_folds_done", 0), "per_class": per_model.get(m, {}).get("per_class", {}),
            "folds": folds,
        })
    cfg = {k: v for k, v in conf.config.items() if k not in ("steps", "seed", "base_seed", "code_version")}
    return {
        "id": conf.id, "ranking_id": conf.ranking_id, "status": conf.status,
        "progress": sum(mm["progress"] for mm in models) / max(len(models), 1),
        "cancel_requested": conf.cancel_requested, "n_folds": len(conf.fold_plan),
        "fold_plan": [[case_ids[i] if i < len(case_ids) else str(i) for i in f] for f in conf.fold_plan],
        "steps": int(conf.config["steps"]), "seed": int(conf.config["base_seed"]), "finetune": cfg,
        "expected_cost": conf.expected_cost, "predicted_top": conf.predicted_top, "best_model": best,
        "top1_confirmed": best_verdict, "top1_note": note, "evaluation": _evaluation_view(session, conf), "note": conf.note,
        "models": models, "created_at": utc(conf.created_at), "updated_at": utc(conf.updated_at), "finished_at": utc(conf.finished_at),
    }
