"""Temporary upload files are locked while their request lives; a sweep (every API start) deletes
only those whose process died, never a live upload of another process."""

from __future__ import annotations

import subprocess
import sys

from app.storage import Storage


def test_the_sweep_takes_orphans_only(tmp_path):
    storage = Storage(tmp_path)
    live = storage.open_temp(storage.temp_path("upload"))
    live.write(b"streaming")
    orphan_path = storage.temp_path("upload")
    code = (f"from app.storage import Storage; s = Storage({str(tmp_path)!r}); "
            f"fh = s.open_temp(__import__('pathlib').Path({str(orphan_path)!r})); fh.write(b'x'); __import__('os')._exit(0)")
    subprocess.run([sys.executable, "-c", code], check=True)  # a process that dies holding its upload
    assert orphan_path.exists()
    other = Storage(tmp_path)  # another process's view of the same storage
    assert other.sweep_orphan_uploads() == 1
    assert not orphan_path.exists() and (tmp_path / "tmp").joinpath(live.name.rsplit("/", 1)[-1]).exists()
    live.close()
    assert other.sweep_orphan_uploads() == 1  # once its request is over and it was not moved, it goes too
