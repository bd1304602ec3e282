"""FastAPI dependencies: the app context, a database session, the caller's tenant, and the objects
it owns named by the path (404 otherwise)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.context import AppContext
from app.errors import ApiError
from app.services.lookups import owned_confirmation, owned_pilot_set, owned_ranking, visible_model
from models_registry.tables import Confirmation, Model, PilotSet, RankingJob
from models_registry.tenants import hash_key, tenant_id_for_key


async def get_ctx(request: Request) -> AppContext:
    return request.app.state.ctx  # type: ignore[no-any-return]


def get_session(ctx: Annotated[AppContext, Depends(get_ctx)]) -> Iterator[Session]:
    session = ctx.sessions()
    try:
        yield session
    finally:
        session.close()


def _lookup_tenant(ctx: AppContext, key: str) -> str | None:
    with ctx.sessions() as session:
        return tenant_id_for_key(session, key, ctx.settings.secret_key)


API_KEY = APIKeyHeader(name="X-API-Key", auto_error=False, description="Tenant API key from `toporank create-tenant`.")
"""Declared as an OpenAPI security scheme (apiKey in header), so clients and fuzzers treat it as credentials."""


async def get_tenant(
    ctx: Annotated[AppContext, Depends(get_ctx)],
    x_api_key: Annotated[str | None, Depends(API_KEY)] = None,
) -> str:
    """The tenant id owning the `X-API-Key` header; 401 otherwise (cached for a few seconds); 429
    past the key's request rate (`TOPORANK_RATE_LIMIT_PER_MINUTE`)."""
    if not x_api_key:
        raise ApiError(401, "missing_api_key", "send your API key in the X-API-Key header")
    digest = hash_key(x_api_key, ctx.settings.secret_key)
    tenant = ctx.auth_cache.get(digest)
    if tenant is None:
        tenant = await run_in_threadpool(_lookup_tenant, ctx, x_api_key)
        if tenant is None:
            raise ApiError(401, "invalid_api_key", "unknown or revoked API key")
        ctx.auth_cache.put(digest, tenant)
    if ctx.rate_limiter is not None:
        ctx.rate_limiter.hit(digest)
    return tenant


Ctx = Annotated[AppContext, Depends(get_ctx)]
Db = Annotated[Session, Depends(get_session)]
TenantId = Annotated[str, Depends(get_tenant)]


def get_owned_pilot_set(pilot_set_id: str, session: Db, tenant: TenantId) -> PilotSet:
    return owned_pilot_set(session, tenant, pilot_set_id)


def get_visible_model(model_id: str, session: Db, tenant: TenantId) -> Model:
    return visible_model(session, tenant, model_id)


def get_owned_ranking(ranking_id: str, session: Db, tenant: TenantId) -> RankingJob:
    return owned_ranking(session, tenant, ranking_id)


def get_owned_confirmation(ranking_id: str, confirmation_id: str, session: Db, tenant: TenantId) -> Confirmation:
    return owned_confirmation(session, tenant, ranking_id, confirmation_id)


OwnedPilotSet = Annotated[PilotSet, Depends(get_owned_pilot_set)]
VisibleModel = Annotated[Model, Depends(get_visible_model)]
OwnedRanking = Annotated[RankingJob, Depends(get_owned_ranking)]
OwnedConfirmation = Annotated[Confirmation, Depends(get_owned_confirmation)]
