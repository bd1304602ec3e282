"""Model registration: validate the spec, store the streamed checkpoint, queue the worker's
validation, wait for it if asked; and deletion with its files and the rankings it touched."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.errors import ApiError, not_found
from app.limits import ensure_storage
from app.serialize import model_dict
from app.upload import MultipartResult, UploadedFile
from models_registry.catalog import resolve_spec
from models_registry.jobs import refresh_job
from models_registry.confirmations import refresh_confirmation
from models_registry.specs import ModelSpec
from models_registry.tables import ConfirmationItem, Model, RankingItem, new_id

if TYPE_CHECKING:
    from app.context import AppContext

SUFFIX = {"nnssl": ".pth", "monai": ".pt", "monai_bundle": ".zip", "torchscript": ".pt"}


def parse_spec(raw: str | None) -> ModelSpec:
    """The `spec` form field as a ModelSpec filled from its catalog entry; 422 with the failing fields otherwise."""
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


def _store_checkpoint(ctx: AppContext, tenant: str, form: MultipartResult) -> tuple[str, ModelSpec, Path, UploadedFile]:
    """Validate the form and move its checkpoint into the model's storage folder (the form is cleaned up either way)."""
    try:
        spec = parse_spec(form.fields.get("spec"))
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
    return model_id, spec, dest, upload


def register_model(ctx: AppContext, tenant: str, form: MultipartResult) -> str:
    """Store the model row (status `validating`) and queue its validation; the new model's id.

    If the broker is unreachable the row and file are removed again and the caller gets 503.
    """
    model_id, spec, dest, upload = _store_checkpoint(ctx, tenant, form)
    try:
        ensure_storage(ctx.storage, tenant, 0, ctx.settings.quota_storage_bytes)  # the checkpoint is in the tenant's folder now
    except ApiError:
        ctx.storage.remove(dest.parent)
        raise
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
    return model_id


async def wait_for_validation(ctx: AppContext, model_id: str, wait: float) -> dict[str, Any]:
    """The model's `ModelOut` body once its status leaves `validating`, or after `wait` seconds; 404 if deleted meanwhile."""
    deadline = time.monotonic() + wait
    while True:
        with ctx.sessions() as session:
            current = session.get(Model, model_id)
            if current is None:  # deleted while we waited
                raise not_found("model")
            if current.status != "validating" or time.monotonic() >= deadline:
                return model_dict(current)
        await asyncio.sleep(0.2)


def delete_model(ctx: AppContext, session: Session, m: Model) -> None:
    """Delete a tenant's model, its scores and fine-tunes (cascade) and its file, and refresh the
    rankings and confirmations it was in (a confirmation whose last unfinished folds were this
    model's then finishes)."""
    if m.tenant_id is None:
        raise ApiError(403, "shared_model_readonly", "shared zoo models cannot be deleted through the API")
    jobs = session.scalars(select(RankingItem.ranking_id).where(RankingItem.model_id == m.id)).all()
    confirmations = session.scalars(select(ConfirmationItem.confirmation_id).where(ConfirmationItem.model_id == m.id)).all()
    path = m.checkpoint_path
    session.delete(m)
    session.flush()
    for job_id in set(jobs):
        refresh_job(session, job_id)
    for conf_id in set(confirmations):
        refresh_confirmation(session, conf_id)
    session.commit()
    ctx.rank_cache.clear()
    ctx.storage.remove(ctx.storage.resolve(path).parent)
