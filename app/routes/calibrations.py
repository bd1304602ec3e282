"""`/v1/calibrations`: the fusion gate fitted on the tenant's own evaluations."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy import select

from app.deps import Db, TenantId
from app.openapi_doc import error_responses
from app.schemas import CalibrationIn, CalibrationList, CalibrationOut
from app.services import calibrations as service
from models_registry.tables import CalibrationRecord

router = APIRouter(prefix="/v1", tags=["calibrations"])
_ERR = error_responses(401, 409, 422, 429, 503)


@router.post(
    "/calibrations",
    status_code=201,
    response_model=CalibrationOut,
    responses={**_ERR, **error_responses(400)},
    summary="Fit the fusion gate on your evaluations",
    description=(
        "One example per evaluated ranking (its latest evaluation: your truth, or a confirmation's). Fits the gate "
        "(a, b), or one alpha per K when fewer than 3 distinct K values were seen, by maximising the mean weighted tau; "
        "reports the leave-one-evaluation-out weighted tau of the default gate and of the fitted one, and warns below "
        "5 evaluations. `GET /v1/rank?fusion=calibrated` uses the latest calibration; the default never changes."
    ),
)
def create_calibration(body: CalibrationIn, session: Db, tenant: TenantId) -> dict[str, Any]:
    return service.calibration_view(service.create_calibration(session, tenant, body.kind))


@router.get("/calibrations", response_model=CalibrationList, responses=_ERR, summary="Your calibrations, newest first")
def list_calibrations(session: Db, tenant: TenantId, limit: Annotated[int, Query(ge=1, le=200)] = 20) -> dict[str, Any]:
    rows = session.scalars(
        select(CalibrationRecord).where(CalibrationRecord.tenant_id == tenant)
        .order_by(CalibrationRecord.created_at.desc(), CalibrationRecord.id.desc()).limit(limit)
    ).all()
    return {"calibrations": [service.calibration_view(r) for r in rows]}
