"""Per-tenant file storage under `settings.storage_root`; every path is built from ids we mint.

Client file names never become paths: uploads land in `tmp/` under random names and are moved to
`tenants/<tenant id>/<kind>/<object id>/...`. Paths stored in the registry are relative to the root.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path


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

    def object_dir(self, tenant_id: str | None, kind: str, object_id: str) -> Path:
        owner = tenant_id or "shared"
        return self.root / "tenants" / owner / kind / object_id

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
