"""`/v1/models`: register a checkpoint with its spec; the worker validates it asynchronously."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from sqlalchemy import or_, select
from starlette.concurrency import run_in_threadpool

from app.deps import Ctx, Db, TenantId, VisibleModel
from app.limits import declared_length, ensure_storage
from app.openapi_doc import error_responses, links_from_id
from app.schemas import ModelList, ModelOut
from app.serialize import model_dict
from app.upload import parse_multipart
from app.services import models as service
from models_registry.catalog import list_entries
from models_registry.tables import Model

router = APIRouter(prefix="/v1", tags=["models"])

_ERR = error_responses(400, 401, 404, 409, 413, 415, 422, 429, 503)

_UPLOAD_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["spec", "checkpoint"],
                    "additionalProperties": False,
                    "properties": {
                        "spec": {
                            "type": "string",
                            "description": "JSON ModelSpec: name, format (nnssl|monai|monai_bundle|torchscript), "
                            "optional catalog entry, architecture, preprocessing, stages.",
                        },
                        "checkpoint": {"type": "string", "format": "binary"},
                    },
                },
                "encoding": {"spec": {"contentType": "application/json"}, "checkpoint": {"contentType": "application/octet-stream"}},
            }
        },
    }
}


@router.post(
    "/models",
    status_code=201,
    response_model=ModelOut,
    responses={**_ERR, **links_from_id(201, "model_id", "get_model", "delete_model")},
    openapi_extra=_UPLOAD_DOC,
    summary="Register a model (checkpoint + spec)",
    description=(
        "Streams the checkpoint into storage (sha256 computed while streaming, size-capped), validates "
        "the spec (and fills it from its `catalog` entry), and answers 201 with status `validating`. "
        "The API never loads checkpoints: a worker task loads it with the zoo adapter and sets status "
        "`ready` (with `load_report` and verified `stages`) or `invalid` (with `error.code`). Pass "
        "`?wait=SECONDS` to block until validated. Rankings refuse `invalid` models."
    ),
)
async def create_model(
    request: Request,
    ctx: Ctx,
    tenant: TenantId,
    wait: Annotated[float, Query(ge=0, le=600, description="seconds to wait for validation")] = 0,
) -> dict[str, Any]:
    await run_in_threadpool(ensure_storage, ctx.storage, tenant, declared_length(request), ctx.settings.quota_storage_bytes)
    form = await parse_multipart(
        request, ctx.storage, file_caps={"checkpoint": ctx.settings.max_checkpoint_bytes}, text_fields={"spec"}
    )
    model_id = service.register_model(ctx, tenant, form)
    return await service.wait_for_validation(ctx, model_id, wait)


@router.get("/models", response_model=ModelList, responses=_ERR, summary="List your models and the shared zoo")
def list_models(
    session: Db,
    tenant: TenantId,
    shared: Annotated[bool | None, Query(description="true: the shared zoo only; false: your own models only; omitted: both")] = None,
) -> dict[str, Any]:
    if shared is None:
        visible = or_(Model.tenant_id == tenant, Model.tenant_id.is_(None))
    else:
        visible = Model.tenant_id.is_(None) if shared else Model.tenant_id == tenant
    rows = session.scalars(select(Model).where(visible).order_by(Model.created_at, Model.id)).all()
    return {"models": [model_dict(m) for m in rows]}


@router.get("/models/{model_id}", response_model=ModelOut, responses=_ERR, summary="One model")
def get_model(m: VisibleModel) -> dict[str, Any]:
    return model_dict(m)


@router.delete("/models/{model_id}", status_code=204, responses=_ERR, summary="Delete a model, its file and scores")
def delete_model(m: VisibleModel, session: Db, ctx: Ctx) -> None:
    service.delete_model(ctx, session, m)


@router.get("/catalog", responses=error_responses(401, 429, 503), summary="Known model families (register a checkpoint with `catalog: <name>`)")
def get_catalog(_tenant: TenantId) -> dict[str, Any]:
    return {"entries": list_entries()}
