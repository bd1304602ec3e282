"""Pilot-set uploads: safe extraction and checking of the archive (in a thread), then the rows;
on any failure nothing is left behind."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.errors import ApiError
from app.ingest.archive import ArchiveLimits
from app.ingest.errors import IngestError
from app.ingest.pilot import IngestLimits, IngestedPilotSet, ingest_archive
from app.serialize import pilot_set_dict
from app.upload import MultipartResult
from models_registry.tables import PilotCase, PilotSet, new_id

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
    name = (form.fields.get("name") or result.dataset_name or "pilot set").strip()[:200] or "pilot set"
    try:
        with ctx.sessions() as session:
            ps = _rows(ps_id, tenant, name, result, ctx.storage.relative(out_dir))
            session.add(ps)
            session.commit()
            return pilot_set_dict(ps, with_cases=True)
    except BaseException:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise


def delete_pilot_set(ctx: AppContext, session: Session, ps: PilotSet) -> None:
    """Hard delete: the rows (cascading to its scores and rankings) and the stored files."""
    path = ps.storage_path
    session.delete(ps)
    session.commit()
    ctx.rank_cache.clear()
    ctx.storage.remove(path)
