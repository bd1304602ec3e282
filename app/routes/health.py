"""Liveness, readiness (database + broker reachable) and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from app.deps import Ctx

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: database and broker reachable (503 otherwise)",
    responses={200: {"description": "every dependency reachable"}, 503: {"description": "a dependency is unreachable (`code`: not_ready)"}},
)
def readyz(ctx: Ctx) -> JSONResponse:
    checks: dict[str, bool] = {}
    try:
        with ctx.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = True
    except Exception:  # noqa: BLE001
        checks["database"] = False
    checks["broker"] = bool(ctx.dispatcher.broker_ok())
    ok = all(checks.values())
    body = {"status": "ok" if ok else "unavailable", "checks": checks}
    if not ok:
        body.update(code="not_ready", detail="a dependency is unreachable")
    return JSONResponse(body, status_code=200 if ok else 503)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"description": "Prometheus text exposition format", "content": {"text/plain": {"schema": {"type": "string"}}}}},
)
def get_metrics(ctx: Ctx) -> Response:
    return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)
