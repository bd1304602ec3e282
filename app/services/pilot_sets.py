"""Pilot-set uploads: safe extraction and checking of the archive (in a thread), then the rows;
on any failure nothing is left behind. Deletion, and the retention purge, remove rows and files."""

from __future__ import annotations

import logging
import shutil
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from app.errors import ApiError
from app.ingest.archive import ArchiveLimits
from app.ingest.errors import IngestError
from app.ingest.pilot import IngestLimits, IngestedPilotSet, ingest_archive
from app.limits import ensure_storage
from app.serialize import pilot_set_dict
from app.storage import Storage
from app.upload import MultipartResult
from models_registry.tables import PilotCase, PilotSet, new_id, utcnow

if TYPE_CHECKING:
    from app.context import AppContext

log = logging.getLogger("toporank.api")


async def _ingest(ctx: AppContext, form: MultipartResult, out_dir: Path) -> IngestedPilotSet:
    """Extract and check the uploaded archive into `out_dir` (the form is cleaned up either way)."""
    s = ctx.settings
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
            return await run_in_threadpool(
                ingest_archive, upload.path, ctx.storage.temp_path("ingest"), out_dir, limits, lambda: new_id("case")
            )
        except IngestError as exc:
            log.info("pilot set upload rejected: %s", exc.code)  # the code only: problems may name patient files
            raise ApiError(exc.status, exc.code, exc.detail, errors=[p.to_dict() for p in exc.problems]) from exc
    finally:
        form.cleanup()


def printable(text: str) -> str:
    """`text` without control characters or lone surrogates (a pilot set's name is stored and shown;
    PostgreSQL refuses NUL outright)."""
    kept = "".join(ch for ch in text if ch.isprintable())
    return kept.encode("utf-8", "ignore").decode("utf-8")


def _rows(ps_id: str, tenant: str, name: str, result: IngestedPilotSet, storage_path: str) -> PilotSet:
    ps = PilotSet(
        id=ps_id,
        tenant_id=tenant,
        name=name,
        layout=result.layout,
        labels=result.labels,
        num_foreground=result.num_foreground,
        channels=result.channels,
        storage_path=storage_path,
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
    return ps


async def create_pilot_set(ctx: AppContext, tenant: str, form: MultipartResult) -> dict[str, Any]:
    """Ingest the form's archive as a new pilot set of the tenant; its `PilotSetOut` body with cases."""
    ps_id = new_id("ps")
    out_dir = ctx.storage.object_dir(tenant, "pilot_sets", ps_id)
    result = await _ingest(ctx, form, out_dir)
    name = printable(form.fields.get("name") or result.dataset_name or "pilot set").strip()[:200] or "pilot set"
    try:
        # the extracted cases are what the quota counts (they are in the tenant's folder now)
        await run_in_threadpool(ensure_storage, ctx.storage, tenant, 0, ctx.settings.quota_storage_bytes)
        with ctx.sessions() as session:
            ps = _rows(ps_id, tenant, name, result, ctx.storage.relative(out_dir))
            session.add(ps)
            session.commit()
            return pilot_set_dict(ps, with_cases=True)
    except BaseException:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise


def remove_pilot_set(session: Session, storage: Storage, ps: PilotSet) -> None:
    """Hard delete: the rows (cascading to its cases, scores and rankings), then the stored files."""
    path = ps.storage_path
    session.delete(ps)
    session.commit()
    storage.remove(path)


def delete_pilot_set(ctx: AppContext, session: Session, ps: PilotSet) -> None:
    """`DELETE /v1/pilot-sets/{id}`: remove it and forget the cached rankings of this process."""
    remove_pilot_set(session, ctx.storage, ps)
    ctx.rank_cache.clear()


def purge_expired(sessions: sessionmaker[Session], storage: Storage, ttl_days: float, now: datetime | None = None) -> int:
    """Remove every pilot set created more than `ttl_days` ago (rows and files); how many went.
    `ttl_days` 0 keeps everything. API processes drop cached rankings of them within their cache's TTL."""
    if ttl_days <= 0:
        return 0
    cutoff = (now or utcnow()) - timedelta(days=ttl_days)
    with sessions() as session:
        expired = session.scalars(select(PilotSet).where(PilotSet.created_at < cutoff)).all()
        for ps in expired:
            remove_pilot_set(session, storage, ps)
    return len(expired)
