"""Stored per-model scores: one row per (pilot set, model, config hash, numeric mode), reused by
every ranking that asks for the same thing computed the same way, written once even when a task is
delivered twice."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models_registry.tables import ModelScore


def find_score(session: Session, pilot_set_id: str, model_id: str, config_hash: str, numeric_mode: str) -> ModelScore | None:
    """The stored score of this model on this pilot set under this config hash and numeric mode, if any."""
    return session.scalar(
        select(ModelScore).where(
            ModelScore.pilot_set_id == pilot_set_id,
            ModelScore.model_id == model_id,
            ModelScore.config_hash == config_hash,
            ModelScore.numeric_mode == numeric_mode,
        )
    )


def score_ids_by_model(
    session: Session, pilot_set_id: str, config_hash: str, numeric_mode: str, model_ids: Iterable[str]
) -> dict[str, str]:
    """model id -> stored score id, for those of `model_ids` already scored on the pilot set under
    the config hash in the numeric mode."""
    rows = session.execute(
        select(ModelScore.model_id, ModelScore.id).where(
            ModelScore.pilot_set_id == pilot_set_id,
            ModelScore.config_hash == config_hash,
            ModelScore.numeric_mode == numeric_mode,
            ModelScore.model_id.in_(list(model_ids)),
        )
    ).all()
    return dict(rows)  # type: ignore[arg-type]


def store_score(
    session: Session,
    *,
    pilot_set_id: str,
    model_id: str,
    config_hash: str,
    numeric_mode: str,
    config: Mapping[str, Any],
    checkpoint_sha256: str,
    code_version: str,
    grtd: float,
    lbtc: float,
    result: Mapping[str, Any],
) -> ModelScore:
    """Add the score row and flush it; if a duplicate delivery stored the same key first (unique
    constraint), roll back and return that row instead. Objects of the session are expired then.

    `result["replicates"]` (the bootstrap's raw values, when present) goes to its own column."""
    replicates = result.get("replicates")
    result = {k: v for k, v in result.items() if k != "replicates"}
    row = ModelScore(
        pilot_set_id=pilot_set_id,
        model_id=model_id,
        config_hash=config_hash,
        numeric_mode=numeric_mode,
        config=dict(config),
        grtd=float(grtd),
        lbtc=float(lbtc),
        baselines=result.get("baselines") or {},
        result=dict(result),
        timings=result.get("timings") or {},
        replicates=replicates,
        checkpoint_sha256=checkpoint_sha256,
        code_version=code_version,
    )
    session.add(row)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        first = find_score(session, pilot_set_id, model_id, config_hash, numeric_mode)
        if first is None:
            raise
        return first
    return row
