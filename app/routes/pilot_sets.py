"""`/v1/pilot-sets`: upload a labelled pilot set archive (nnU-Net or MSD layout)."""

from __future__ import annotations

import logging
import shutil
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from app.deps import Ctx, Db, TenantId
from app.errors import ApiError, not_found
from app.ingest.archive import ArchiveLimits
from app.ingest.errors import IngestError
from app.ingest.pilot import IngestLimits, ingest_archive
from app.schemas import ErrorBody, PilotSetList, PilotSetOut
from app.serialize import pilot_set_dict
from app.upload import parse_multipart
from models_registry.tables import PilotCase, PilotSet, new_id

log = logging.getLogger("toporank.api")
router = APIRouter(prefix="/v1", tags=["pilot sets"])
_ERR = {r: {"model": ErrorBody} for r in (401, 404, 413, 415, 422)}

_UPLOAD_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["archive"],
                    "properties": {
                        "archive": {"type": "string", "format": "binary", "description": "zip or tar(.gz)"},
                        "name": {"type": "string"},
                    },
                }
            }
        },
    }
}


def owned_pilot_set(session: Db, tenant: str, pilot_set_id: str) -> PilotSet:
    ps = session.get(PilotSet, pilot_set_id)
    if ps is None or ps.tenant_id != tenant:
        raise not_found("pilot_set")
    return ps


@router.post(
    "/pilot-sets",
    status_code=201,
    response_model=PilotSetOut,
    responses=_ERR,
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
    s = ctx.settings
    form = await parse_multipart(request, ctx.storage, file_caps={"archive": s.max_upload_bytes}, text_fields={"name"})
    ps_id = new_id("ps")
    out_dir = ctx.storage.object_dir(tenant, "pilot_sets", ps_id)
    try:
        upload = form.files.get("archive")
        if upload is None:
            raise ApiError(422, "missing_field", "file field 'archive' is required")
        limits = IngestLimits(
            ArchiveLimits(s.max_archive_entries, s.max_extracted_bytes, s.max_compression_ratio),
            max_case_voxels=s.max_case_voxels,
            max_cases=s.max_pilot_cases,
        )
        try:
            result = await run_in_threadpool(
                ingest_archive, upload.path, ctx.storage.temp_path("ingest"), out_dir, limits, lambda: new_id("case")
            )
        except IngestError as exc:
            log.info("pilot set upload rejected: %s", exc.code)
            raise ApiError(exc.status, exc.code, exc.detail, errors=[p.to_dict() for p in exc.problems]) from exc
    finally:
        form.cleanup()
    name = (form.fields.get("name") or result.dataset_name or "pilot set").strip()[:200] or "pilot set"
    try:
        with ctx.sessions() as session:
            ps = PilotSet(
                id=ps_id,
                tenant_id=tenant,
                name=name,
                layout=result.layout,
                labels=result.labels,
                num_foreground=result.num_foreground,
                channels=result.channels,
                storage_path=ctx.storage.relative(out_dir),
            )
            ps.cases = [
                PilotCase(
                    id=c.case_id,
                    position=c.position,
                    shape=list(c.summary.shape),
                    spacing=list(c.summary.spacing),
                    voxels_per_class={str(k): v for k, v in c.summary.voxels_per_class.items()},
                    n_channels=c.summary.n_channels,
                )
                for c in result.cases
            ]
            session.add(ps)
            session.commit()
            return pilot_set_dict(ps, with_cases=True)
    except BaseException:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise


@router.get("/pilot-sets", response_model=PilotSetList, responses=_ERR, summary="List your pilot sets")
def list_pilot_sets(session: Db, tenant: TenantId) -> dict[str, Any]:
    rows = session.scalars(select(PilotSet).where(PilotSet.tenant_id == tenant).order_by(PilotSet.created_at, PilotSet.id)).all()
    return {"pilot_sets": [pilot_set_dict(p, with_cases=False) for p in rows]}


@router.get("/pilot-sets/{pilot_set_id}", response_model=PilotSetOut, responses=_ERR, summary="One pilot set with its cases")
def get_pilot_set(pilot_set_id: str, session: Db, tenant: TenantId) -> dict[str, Any]:
    return pilot_set_dict(owned_pilot_set(session, tenant, pilot_set_id), with_cases=True)


@router.delete(
    "/pilot-sets/{pilot_set_id}",
    status_code=204,
    responses=_ERR,
    summary="Hard delete: files, scores and the rankings over this pilot set",
)
def delete_pilot_set(pilot_set_id: str, session: Db, tenant: TenantId, ctx: Ctx) -> None:
    ps = owned_pilot_set(session, tenant, pilot_set_id)
    path = ps.storage_path
    session.delete(ps)
    session.commit()
    ctx.rank_cache.clear()
    ctx.storage.remove(path)
