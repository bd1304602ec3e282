"""Confirmations in the registry: fold plans, fine-tune record keys, reuse, status and summaries.

A confirmation fine-tunes some of a ranking's models by F-fold cross-validation over the pilot
set's cases (one item per model and fold). Fine-tune records are keyed like scores: the same
pilot set, model, fold plan, fold, fine-tune config and code version on the same device kind give
the same row, written once even when a task is delivered twice.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models_registry.jobs import refresh_parent
from models_registry.tables import (
    Confirmation,
    ConfirmationItem,
    Evaluation,
    FinetuneRecord,
    ModelScore,
    PilotSet,
    RankingItem,
    RankingJob,
)
from transferability.evaluation import evaluate_scores
from transferability.fusion import resolve_fusion

LOO_MAX_CASES = 5
"""Up to this many pilot cases the default plan is leave-one-out; above it, DEFAULT_FOLDS folds."""
DEFAULT_FOLDS = 5


def default_folds(n_cases: int) -> int:
    """Leave-one-out for <= LOO_MAX_CASES cases, DEFAULT_FOLDS folds above."""
    return n_cases if n_cases <= LOO_MAX_CASES else DEFAULT_FOLDS


def fold_plan(n_cases: int, folds: int, seed: int) -> list[list[int]]:
    """Held-out case positions of each of `folds` folds: the cases shuffled by `seed`, then dealt
    into near-equal folds (sizes differ by at most one), each fold sorted. Every case is held out
    exactly once; a plan depends only on (n_cases, folds, seed)."""
    if n_cases < 2:
        raise ValueError("cross-validation needs at least 2 cases")
    if not 2 <= folds <= n_cases:
        raise ValueError(f"folds must be between 2 and the number of cases ({n_cases}), got {folds}")
    order = np.random.default_rng([int(seed), 104729]).permutation(n_cases)
    return [sorted(int(i) for i in order[f::folds]) for f in range(folds)]


def fold_seed(base_seed: int, fold: int) -> int:
    """The fine-tune seed of one fold (fresh decoder, patches, augmentation)."""
    return int(base_seed) * 1000 + int(fold)


def record_key(plan: Sequence[Sequence[int]], fold: int, config: Mapping[str, Any], code_version: str) -> str:
    """sha256 of what a fine-tune record depends on besides (pilot set, model, device)."""
    blob = json.dumps({"plan": [list(map(int, f)) for f in plan], "fold": int(fold), "config": dict(config), "code": code_version},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def find_record(session: Session, pilot_set_id: str, model_id: str, key_hash: str, device: str) -> FinetuneRecord | None:
    return session.scalar(
        select(FinetuneRecord).where(
            FinetuneRecord.pilot_set_id == pilot_set_id,
            FinetuneRecord.model_id == model_id,
            FinetuneRecord.key_hash == key_hash,
            FinetuneRecord.device == device,
        )
    )


def record_ids_by_unit(
    session: Session, pilot_set_id: str, device: str, units: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], str]:
    """(model id, key hash) -> stored record id, for the units already fine-tuned on this device kind."""
    units = list(units)
    if not units:
        return {}
    rows = session.execute(
        select(FinetuneRecord.model_id, FinetuneRecord.key_hash, FinetuneRecord.id).where(
            FinetuneRecord.pilot_set_id == pilot_set_id,
            FinetuneRecord.device == device,
            FinetuneRecord.model_id.in_({m for m, _ in units}),
            FinetuneRecord.key_hash.in_({k for _, k in units}),
        )
    ).all()
    return {(m, k): rid for m, k, rid in rows}


def store_record(session: Session, **fields: Any) -> FinetuneRecord:
    """Insert a fine-tune record; if a duplicate delivery stored the same key first, return that row."""
    row = FinetuneRecord(**fields)
    session.add(row)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        existing = find_record(session, fields["pilot_set_id"], fields["model_id"], fields["key_hash"], fields["device"])
        if existing is None:
            raise
        return existing
    return row


def refresh_confirmation(session: Session, confirmation_id: str) -> Confirmation | None:
    """Recompute and store the confirmation's status from its items (call after any item change);
    once it has finished, record its evaluation (`finalize_confirmation`)."""
    conf = refresh_parent(
        session, Confirmation, confirmation_id, select(ConfirmationItem.status).where(ConfirmationItem.confirmation_id == confirmation_id)
    )
    if conf is None:
        return None
    if conf.finished_at is not None:
        finalize_confirmation(session, conf)
    return conf


def fold_results(session: Session, conf: Confirmation) -> dict[str, dict[int, FinetuneRecord]]:
    """model id -> fold -> fine-tune record, over the confirmation's succeeded items."""
    ids = [it.record_id for it in conf.items if it.status == "succeeded" and it.record_id]
    records = {r.id: r for r in session.scalars(select(FinetuneRecord).where(FinetuneRecord.id.in_(ids)))} if ids else {}
    out: dict[str, dict[int, FinetuneRecord]] = {m: {} for m in conf.model_ids}
    for it in conf.items:
        rec = records.get(it.record_id or "")
        if it.status == "succeeded" and rec is not None:
            out.setdefault(it.model_id, {})[it.fold] = rec
    return out


def summaries(
    session: Session, conf: Confirmation, done: Mapping[str, Mapping[int, FinetuneRecord]] | None = None
) -> dict[str, dict[str, Any]]:
    """model id -> `model_summary` of its finished folds (`done`: `fold_results`, when the caller holds it)."""
    n_folds = len(conf.fold_plan)
    return {
        m: model_summary({f: r.dice for f, r in folds.items()}, {f: r.per_class for f, r in folds.items()}, n_folds)
        for m, folds in (fold_results(session, conf) if done is None else done).items()
    }


def finalize_confirmation(session: Session, conf: Confirmation) -> None:
    """Once: turn a finished confirmation into an evaluation of its ranking (truth = mean held-out
    Dice of each model with every fold done), or record in `note` why there is none (cancelled,
    fewer than two such models: a weighted tau needs two)."""
    if conf.evaluation_id is not None or conf.note is not None:
        return
    if conf.status == "cancelled":
        conf.note = "cancelled: no evaluation"
        return
    truth = {m: s["dice_mean"] for m, s in summaries(session, conf).items() if s["complete"] and s["dice_mean"] is not None}
    if len(truth) < 2:
        conf.note = (f"{len(truth)} model(s) with every fold fine-tuned: an evaluation needs at least 2 "
                     "(a weighted tau compares models), so none was recorded")
        return
    job = session.get(RankingJob, conf.ranking_id)
    k = session.scalar(select(PilotSet.num_foreground).where(PilotSet.id == job.pilot_set_id)) if job else None
    rows = dict(session.execute(
        select(RankingItem.model_id, ModelScore)
        .join(ModelScore, ModelScore.id == RankingItem.score_id)
        .where(RankingItem.ranking_id == conf.ranking_id, RankingItem.model_id.in_(list(truth)))
    ).all()) if job else {}
    if job is None or k is None or set(rows) != set(truth):
        conf.note = "the ranking's scores of the confirmed models are gone: no evaluation"
        return
    fusion = resolve_fusion(job.fusion)
    metrics = evaluate_scores(
        {m: (sc.grtd, sc.lbtc) for m, sc in rows.items()}, {m: sc.baselines or {} for m, sc in rows.items()}, truth, int(k),
        a=fusion.a, b=fusion.b, alpha=fusion.alpha,
    )
    ev = Evaluation(ranking_id=conf.ranking_id, truth=truth, result=metrics, source="confirmation", confirmation_id=conf.id)
    session.add(ev)
    session.flush()
    conf.evaluation_id = ev.id


def _finite(values: Iterable[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def model_summary(fold_dice: Mapping[int, float | None], fold_per_class: Mapping[int, Mapping[str, float | None]], n_folds: int) -> dict[str, Any]:
    """One model's held-out Dice over its finished folds: mean, sample std, standard error
    (std / sqrt(folds)), and per-class means; `complete` when every fold has a value."""
    values = _finite(fold_dice.values())
    n = len(values)
    mean = float(np.mean(values)) if n else None
    std = float(np.std(values, ddof=1)) if n >= 2 else None
    classes = sorted({c for pc in fold_per_class.values() for c in pc}, key=lambda c: int(c) if str(c).isdigit() else 0)
    per_class = {c: (float(np.mean(v)) if (v := _finite(pc.get(c) for pc in fold_per_class.values())) else None) for c in classes}
    return {
        "dice_mean": mean,
        "dice_std": std,
        "dice_se": std / math.sqrt(n) if std is not None else None,
        "n_folds_done": n,
        "complete": n == n_folds,
        "per_class": per_class,
    }


def top1_verdict(predicted_top: str | None, summaries: Mapping[str, Mapping[str, Any]]) -> tuple[bool | None, str | None, str | None]:
    """(top1_confirmed, best model, note): is the predicted top model's mean Dice within one standard
    error of the best confirmed model's? None with a note when it cannot be said."""
    done = {m: s for m, s in summaries.items() if s.get("complete") and s.get("dice_mean") is not None}
    if len(done) < 2:
        return None, (next(iter(done)) if done else None), "fewer than 2 models have every fold done: nothing to compare"
    best = max(sorted(done), key=lambda m: done[m]["dice_mean"])
    if predicted_top is None or predicted_top not in done:
        return None, best, "the ranking's predicted top model is not among the confirmed models with every fold done"
    se = done[best]["dice_se"] or 0.0
    return bool(done[predicted_top]["dice_mean"] >= done[best]["dice_mean"] - se), best, None
