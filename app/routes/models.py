"""`/v1/models`: register a checkpoint with its spec; the worker validates it asynchronously."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import ValidationError
from sqlalchemy import or_, select

from app.deps import Ctx, Db, TenantId
from app.errors import ApiError, not_found
from app.schemas import ErrorBody, ModelList, ModelOut
from app.serialize import model_dict
from app.upload import parse_multipart
from models_registry.catalog import list_entries, resolve_spec
from models_registry.jobs import refresh_job
from models_registry.specs import ModelSpec
from models_registry.tables import Model, RankingItem, new_id

router = APIRouter(prefix="/v1", tags=["models"])

SUFFIX = {"nnssl": ".pth", "monai": ".pt", "monai_bundle": ".zip", "torchscript": ".pt"}
_ERR = {r: {"model": ErrorBody} for r in (401, 404, 409, 413, 415, 422, 503)}

_UPLOAD_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["spec", "checkpoint"],
                    "properties": {
                        "spec": {
                            "type": "string",
                            "description": "JSON ModelSpec: name, format (nnssl|monai|monai_bundle|torchscript), "
                            "optional catalog entry, architecture, preprocessing, stages.",
                        },
                        "checkpoint": {"type": "string", "format": "binary"},
                    },
                }
            }
        },
    }
}


def visible_model(session: Db, tenant: str, model_id: str) -> Model:
    m = session.get(Model, model_id)
    if m is None or (m.tenant_id is not None and m.tenant_id != tenant):
        raise not_found("model")
    return m


def _parse_spec(raw: str | None) -> ModelSpec:
    if raw is None:
        raise ApiError(422, "missing_field", "form field 'spec' (JSON) is required")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ApiError(422, "invalid_spec", "spec is not valid JSON") from exc
    try:
        spec = ModelSpec.model_validate(data)
        return resolve_spec(spec)
    except ValidationError as exc:
        errors = [{"field": ".".join(str(p) for p in e["loc"]), "problem": e["msg"]} for e in exc.errors()]
        raise ApiError(422, "invalid_spec", "spec failed validation", errors=errors) from exc
    except ValueError as exc:
        raise ApiError(422, "invalid_spec", str(exc)) from exc


@router.post(
    "/models",
    status_code=201,
    response_model=ModelOut,
    responses=_ERR,
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
    form = await parse_multipart(
        request, ctx.storage, file_caps={"checkpoint": ctx.settings.max_checkpoint_bytes}, text_fields={"spec"}
    )
    try:
        spec = _parse_spec(form.fields.get("spec"))
        upload = form.files.get("checkpoint")
        if upload is None:
            raise ApiError(422, "missing_field", "file field 'checkpoint' is required")
        if upload.size == 0:
            raise ApiError(422, "empty_checkpoint", "checkpoint file is empty")
        model_id = new_id("mdl")
        dest = ctx.storage.object_dir(tenant, "models", model_id) / f"checkpoint{SUFFIX[spec.format]}"
        ctx.storage.move_into(upload.path, dest)
    finally:
        form.cleanup()
    spec_json = spec.model_dump(mode="json")
    row = Model(
        id=model_id,
        tenant_id=tenant,
        name=spec.name,
        format=spec.format,
        catalog=spec.catalog,
        spec=spec_json,
        stages=spec_json.get("stages") or [],
        checkpoint_path=ctx.storage.relative(dest),
        sha256=upload.sha256,
        size_bytes=upload.size,
        status="validating",
    )
    with ctx.sessions() as session:
        session.add(row)
        session.commit()
    try:
        ctx.dispatcher.validate_model(model_id)
    except Exception as exc:
        with ctx.sessions() as session:
            gone = session.get(Model, model_id)
            if gone is not None:
                session.delete(gone)
                session.commit()
        ctx.storage.remove(dest.parent)
        raise ApiError(503, "broker_unavailable", "task queue unreachable; model not registered") from exc
    deadline = time.monotonic() + wait
    while True:
        with ctx.sessions() as session:
            current = session.get(Model, model_id)
            if current is None:  # deleted while we waited
                raise not_found("model")
            if current.status != "validating" or time.monotonic() >= deadline:
                return model_dict(current)
        await asyncio.sleep(0.2)


@router.get("/models", response_model=ModelList, responses=_ERR, summary="List your models and the shared zoo")
def list_models(session: Db, tenant: TenantId) -> dict[str, Any]:
    rows = session.scalars(
        select(Model).where(or_(Model.tenant_id == tenant, Model.tenant_id.is_(None))).order_by(Model.created_at, Model.id)
    ).all()
    return {"models": [model_dict(m) for m in rows]}


@router.get("/models/{model_id}", response_model=ModelOut, responses=_ERR, summary="One model")
def get_model(model_id: str, session: Db, tenant: TenantId) -> dict[str, Any]:
    return model_dict(visible_model(session, tenant, model_id))


@router.delete("/models/{model_id}", status_code=204, responses=_ERR, summary="Delete a model, its file and scores")
def delete_model(model_id: str, session: Db, tenant: TenantId, ctx: Ctx) -> None:
    m = visible_model(session, tenant, model_id)
    if m.tenant_id is None:
        raise ApiError(403, "shared_model_readonly", "shared zoo models cannot be deleted through the API")
    jobs = session.scalars(select(RankingItem.ranking_id).where(RankingItem.model_id == model_id)).all()
    path = m.checkpoint_path
    session.delete(m)
    session.flush()
    for job_id in set(jobs):
        refresh_job(session, job_id)
    session.commit()
    ctx.rank_cache.clear()
    ctx.storage.remove(ctx.storage.resolve(path).parent)


@router.get("/catalog", summary="Known model families (register a checkpoint with `catalog: <name>`)")
def catalog(_tenant: TenantId) -> dict[str, Any]:
    return {"entries": list_entries()}
