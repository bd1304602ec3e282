"""Objects a tenant may see, by id: anything else is 404, never 403, so ids of other tenants leak nothing."""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.errors import not_found
from models_registry.tables import Confirmation, Model, PilotSet, RankingJob


def storable(text: str) -> bool:
    """Whether a client string can reach the database at all: PostgreSQL refuses NUL characters and
    UTF-8 cannot encode a lone surrogate. An id that fails this names nothing (404), without a query."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def owned_pilot_set(session: Session, tenant: str, pilot_set_id: str) -> PilotSet:
    """The tenant's pilot set `pilot_set_id`, or 404."""
    ps = session.get(PilotSet, pilot_set_id) if storable(pilot_set_id) else None
    if ps is None or ps.tenant_id != tenant:
        raise not_found("pilot_set")
    return ps


def visible_model(session: Session, tenant: str, model_id: str) -> Model:
    """The tenant's model or a shared zoo model (no tenant) `model_id`, or 404."""
    m = session.get(Model, model_id) if storable(model_id) else None
    if m is None or (m.tenant_id is not None and m.tenant_id != tenant):
        raise not_found("model")
    return m


def owned_ranking(session: Session, tenant: str, ranking_id: str) -> RankingJob:
    """The tenant's ranking job `ranking_id`, or 404."""
    job = session.get(RankingJob, ranking_id) if storable(ranking_id) else None
    if job is None or job.tenant_id != tenant:
        raise not_found("ranking")
    return job


def owned_confirmation(session: Session, tenant: str, ranking_id: str, confirmation_id: str) -> Confirmation:
    """The tenant's confirmation `confirmation_id` of ranking `ranking_id`, or 404."""
    conf = session.get(Confirmation, confirmation_id) if storable(confirmation_id) else None
    if conf is None or conf.tenant_id != tenant or conf.ranking_id != ranking_id:
        raise not_found("confirmation")
    return conf
