"""`toporank zoo import DIR`: register a folder of downloaded OpenMind releases as the shared zoo.

One subfolder per model, as the model hub serves it (`checkpoint_final.pth` with
`adaptation_plan.json` beside it) or as a trainer leaves it (`fold_all/checkpoint_final.pth`, the
plan one folder up). Each model's catalog entry is inferred from the nnssl trainer that wrote it;
it is stored once (by sha256) as a shared model, visible to every tenant and owned by none, and
its validation is queued for the workers like any registration. Re-running is a no-op for files
already imported.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.storage import Storage
from models_registry.catalog import CatalogEntry, entry_for_trainer, resolve_spec
from models_registry.nnssl_files import PLAN_FILE, name_field, plan_architecture, sidecar_identity, sidecar_plans
from models_registry.specs import ModelSpec
from models_registry.tables import Model, new_id
from toporank.files import sha256_of

CHECKPOINT = "checkpoint_final.pth"


@dataclass(frozen=True)
class ImportRow:
    """One subfolder's outcome; `ok` is False when it was skipped."""

    name: str
    entry: str | None
    sha256: str | None
    status: str
    ok: bool
    model_id: str | None = None


def find_checkpoint(folder: Path) -> Path | str:
    """The folder's checkpoint: beside the plan (hub release) or in its one `fold_*` subfolder
    (`fold_all` wins when there are several); a reason string when there is none or it is ambiguous."""
    direct = folder / CHECKPOINT
    if direct.is_file():
        return direct
    folds = sorted(p for p in folder.glob(f"fold_*/{CHECKPOINT}") if p.is_file())
    if not folds:
        return f"no {CHECKPOINT} (nor fold_*/{CHECKPOINT})"
    if len(folds) == 1:
        return folds[0]
    fold_all = folder / "fold_all" / CHECKPOINT
    return fold_all if fold_all in folds else f"{len(folds)} folds and no fold_all: import one fold per folder"


def read_identity(checkpoint: Path) -> tuple[str | None, str | None]:
    """(trainer name, plan architecture) from the plan JSON beside the file, else from the file itself.

    The JSON is cheap; reading the checkpoint needs torch (weights_only) and is done only without it."""
    trainer, arch = sidecar_identity(checkpoint)
    if trainer is None:
        from worker.adapters.base import ModelLoadError, safe_torch_load

        try:
            ckpt = safe_torch_load(checkpoint)
        except ModelLoadError:
            return None, arch
        trainer = name_field(ckpt, "trainer_name")
        arch = arch or plan_architecture(ckpt.get("nnssl_adaptation_plan") if isinstance(ckpt, dict) else None)
    return trainer, arch


def infer_entry(trainer: str | None, arch: str | None) -> CatalogEntry | str:
    """The catalog entry of a file written by `trainer`, or why there is none."""
    if trainer is None:
        return "no trainer_name in the checkpoint or its adaptation_plan.json"
    entry = entry_for_trainer(trainer)
    if entry is None:
        return f"trainer {trainer} matches no catalog entry"
    want = entry.architecture.get("arch_class_name")
    if arch is not None and want is not None and arch != want:
        return f"trainer {trainer} is {entry.name} ({want}), but the plan says {arch}"
    return entry


def _store_copy(storage: Storage, model_id: str, checkpoint: Path) -> Path:
    """Copy the checkpoint (and its plan JSON, which carries the trainer name) into shared storage, atomically."""
    dest_dir = storage.object_dir(None, "models", model_id)
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / "checkpoint.pth"
    tmp = dest_dir / f".{CHECKPOINT}.part"
    shutil.copyfile(checkpoint, tmp)
    os.replace(tmp, dest)
    for side in sidecar_plans(checkpoint)[:1]:
        shutil.copyfile(side, dest_dir / PLAN_FILE)
    return dest


def import_zoo(
    folder: Path,
    sessions: sessionmaker[Session],
    storage: Storage,
    validate: Callable[[str], None],
    progress: Callable[[ImportRow], None] | None = None,
) -> list[ImportRow]:
    """Import every subfolder of `folder` (sorted by name); see the module docstring.

    `validate(model_id)` queues a validation; when it raises, the model stays `validating` and
    `toporank requeue` (or the next `serve`) sends it again."""
    rows = []
    for sub in sorted(p for p in Path(folder).iterdir() if p.is_dir() and not p.name.startswith(".")):
        row = _import_one(sub, sessions, storage, validate)
        rows.append(row)
        if progress is not None:
            progress(row)
    return rows


def _import_one(sub: Path, sessions: sessionmaker[Session], storage: Storage, validate: Callable[[str], None]) -> ImportRow:
    found = find_checkpoint(sub)
    if isinstance(found, str):
        return ImportRow(sub.name, None, None, f"skipped: {found}", ok=False)
    sha = sha256_of(found)
    with sessions() as s:
        existing = s.scalar(select(Model).where(Model.tenant_id.is_(None), Model.sha256 == sha))
        if existing is not None:
            return ImportRow(sub.name, existing.catalog, sha, f"already imported as {existing.id}", ok=True, model_id=existing.id)
    entry = infer_entry(*read_identity(found))
    if isinstance(entry, str):
        return ImportRow(sub.name, None, sha, f"skipped: {entry}", ok=False)
    spec = resolve_spec(ModelSpec(name=sub.name[:200], format="nnssl", catalog=entry.name))
    model_id = new_id("mdl")
    dest = _store_copy(storage, model_id, found)
    spec_json = spec.model_dump(mode="json")
    with sessions() as s:
        s.add(Model(
            id=model_id, tenant_id=None, name=spec.name, format="nnssl", catalog=entry.name, spec=spec_json,
            stages=spec_json.get("stages") or [], checkpoint_path=storage.relative(dest), sha256=sha,
            size_bytes=found.stat().st_size, status="validating",
        ))
        s.commit()
    try:
        validate(model_id)
    except Exception:  # noqa: BLE001 - the row stays `validating`; requeue sends it later
        return ImportRow(sub.name, entry.name, sha, "imported; validation not queued (broker unreachable): run `toporank requeue`",
                         ok=True, model_id=model_id)
    return ImportRow(sub.name, entry.name, sha, "imported, validating", ok=True, model_id=model_id)


def format_table(rows: Iterable[ImportRow]) -> str:
    """The rows as an aligned text table: name, entry, sha256 (first 12 hex digits), status."""
    data: list[list[Any]] = [["name", "entry", "sha256", "status"]]
    data += [[r.name, r.entry or "-", (r.sha256 or "-")[:12], r.status] for r in rows]
    widths = [max(len(str(row[i])) for row in data) for i in range(3)]
    return "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(row[:3], widths)) + "  " + str(row[3]) for row in data
    )
