"""Per-tenant file storage under `settings.storage_root`; every path is built from ids we mint.

Client file names never become paths: uploads land in `tmp/` under random names and are moved to
`tenants/<tenant id>/<kind>/<object id>/...`. Paths stored in the registry are relative to the root.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import shutil
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)


class Storage:
    """Resolves and manages paths inside one storage root."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.tmp = self.root / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)

    def resolve(self, relative: str | Path) -> Path:
        """Absolute path of a stored relative path; refuses anything escaping the root."""
        path = (self.root / relative).resolve()
        if path != self.root and self.root not in path.parents:
            raise ValueError("path escapes the storage root")
        return path

    def relative(self, path: Path) -> str:
        return str(Path(path).resolve().relative_to(self.root))

    def temp_path(self, kind: str) -> Path:
        """A fresh random path in the storage's tmp folder (same filesystem: moves are atomic)."""
        return self.tmp / f"{kind}-{secrets.token_hex(12)}"

    def open_temp(self, path: Path) -> IO[bytes]:
        """Create a temporary upload file, write-locked (flock) for as long as it is open: the lock
        tells `sweep_orphan_uploads` in any process that a live request still owns the file."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(path, "wb")  # noqa: SIM115 - the caller closes it
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fh

    def sweep_orphan_uploads(self) -> int:
        """Delete the temporary upload files no process holds any more (their request died with
        its process, e.g. an API killed mid-upload); how many went. Safe while other processes upload."""
        removed = 0
        for path in self.tmp.glob("upload-*"):
            try:
                fh = open(path, "rb")  # noqa: SIM115
            except OSError:
                continue
            with fh:
                try:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live upload
                path.unlink(missing_ok=True)
                removed += 1
        if removed:
            log.info("removed %d abandoned temporary upload file(s)", removed)
        return removed

    def tenant_dir(self, tenant_id: str | None) -> Path:
        """Everything stored for a tenant (`shared` for the zoo, which has no owner)."""
        return self.root / "tenants" / (tenant_id or "shared")

    def object_dir(self, tenant_id: str | None, kind: str, object_id: str) -> Path:
        return self.tenant_dir(tenant_id) / kind / object_id

    def move_into(self, src: Path, dest: Path) -> Path:
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dest)
        return dest

    def remove(self, relative_or_abs: str | Path) -> None:
        """Delete a stored file or folder (missing is fine)."""
        path = self.resolve(relative_or_abs)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
