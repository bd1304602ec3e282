"""`/v1/pilot-sets`: upload a labelled pilot set archive (nnU-Net or MSD layout)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from app.deps import Ctx, Db, OwnedPilotSet, TenantId
from app.limits import declared_length, ensure_storage
from app.openapi_doc import error_responses, links_from_id
from app.schemas import PilotSetList, PilotSetOut
from app.serialize import pilot_set_dict
from app.services import pilot_sets as service
from app.upload import parse_multipart
from models_registry.tables import PilotSet

router = APIRouter(prefix="/v1", tags=["pilot sets"])
_ERR = error_responses(400, 401, 404, 413, 415, 422, 429, 503)

_UPLOAD_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["archive"],
                    "additionalProperties": False,
                    "properties": {
                        "archive": {"type": "string", "format": "binary", "description": "zip or tar(.gz)"},
                        "name": {"type": "string"},
                    },
                },
                "encoding": {"archive": {"contentType": "application/zip, application/gzip, application/x-tar"}},
            }
        },
    }
}


@router.post(
    "/pilot-sets",
    status_code=201,
    response_model=PilotSetOut,
    responses={**_ERR, **links_from_id(201, "pilot_set_id", "get_pilot_set", "delete_pilot_set")},
    openapi_extra=_UPLOAD_DOC,
    summary="Upload a pilot set",
    description=(
        "An archive (zip or tar.gz) in nnU-Net v2 layout (dataset.json with channel_names, labels, "
        "file_ending; imagesTr/CASE_0000.nii.gz; labelsTr/CASE.nii.gz) or MSD layout, auto-detected. "
        "Extraction is safe (no absolute paths, '..', links or devices; capped entries, size and "
        "compression ratio); NIfTI sizes are checked from headers before decompressing; per case the "
        "image and label shapes and affines must agree, labels lie in the declared labels, images be "
        "finite. Stored cases get opaque ids and PHI-free headers. Problems come back as "
        "`errors: [{file, problem}]`."
    ),
)
async def create_pilot_set(request: Request, ctx: Ctx, tenant: TenantId) -> dict[str, Any]:
    await run_in_threadpool(ensure_storage, ctx.storage, tenant, declared_length(request), ctx.settings.quota_storage_bytes)
    form = await parse_multipart(request, ctx.storage, file_caps={"archive": ctx.settings.max_upload_bytes}, text_fields={"name"})
    return await service.create_pilot_set(ctx, tenant, form)


@router.get("/pilot-sets", response_model=PilotSetList, responses=_ERR, summary="List your pilot sets")
def list_pilot_sets(session: Db, tenant: TenantId) -> dict[str, Any]:
    rows = session.scalars(select(PilotSet).where(PilotSet.tenant_id == tenant).order_by(PilotSet.created_at, PilotSet.id)).all()
    return {"pilot_sets": [pilot_set_dict(p, with_cases=False) for p in rows]}


@router.get("/pilot-sets/{pilot_set_id}", response_model=PilotSetOut, responses=_ERR, summary="One pilot set with its cases")
def get_pilot_set(ps: OwnedPilotSet) -> dict[str, Any]:
    return pilot_set_dict(ps, with_cases=True)


@router.delete(
    "/pilot-sets/{pilot_set_id}",
    status_code=204,
    responses=_ERR,
    summary="Hard delete: files, scores and the rankings over this pilot set",
)
def delete_pilot_set(ps: OwnedPilotSet, session: Db, ctx: Ctx) -> None:
    service.delete_pilot_set(ctx, session, ps)
