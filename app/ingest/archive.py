"""Safe extraction of a zip or tar(.gz) archive into random file names under a scratch folder.

Every entry is checked before a byte is written: no absolute paths, drive letters or `..`, only
regular files and folders (no symlinks, hard links, devices or FIFOs), at most `max_entries`
entries, at most `max_total_bytes` uncompressed, and a bounded compression ratio (per zip entry
and for the whole archive). Entry names are never used as paths: the wanted entries are written to
`dest/e000001`, ... and returned as a name -> path map.
"""

from __future__ import annotations

import stat
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from app.ingest.errors import IngestError, Problem

CHUNK = 1 << 20


@dataclass(frozen=True)
class ArchiveLimits:
    max_entries: int
    max_total_bytes: int
    max_ratio: float


def normalise_name(raw: str) -> str:
    """The entry's path as a clean relative POSIX path, or IngestError if it is unsafe."""
    name = raw.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise IngestError("unsafe_archive", "archive entry has an absolute path", [Problem(raw, "absolute path")])
    parts = [p for p in PurePosixPath(name).parts if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise IngestError("unsafe_archive", "archive entry escapes the archive", [Problem(raw, "path contains '..'")])
    if any("\x00" in p for p in parts):
        raise IngestError("unsafe_archive", "archive entry name contains NUL", [Problem(raw, "NUL in name")])
    return "/".join(parts)


def sniff(path: Path) -> str:
    """'zip', 'tar' or 'unknown' from the file's magic bytes (never from its client-given name)."""
    with open(path, "rb") as fh:
        head = fh.read(512)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if head[:2] == b"\x1f\x8b" or head[:3] == b"BZh" or head[:6] == b"\xfd7zXZ\x00" or head[257:262] == b"ustar":
        return "tar"
    return "unknown"


class _Budget:
    def __init__(self, limits: ArchiveLimits, archive_size: int) -> None:
        self.limits = limits
        self.archive_size = max(archive_size, 1)
        self.entries = 0
        self.total = 0

    def entry(self, name: str) -> None:
        self.entries += 1
        if self.entries > self.limits.max_entries:
            raise IngestError("archive_too_many_entries", f"archive has more than {self.limits.max_entries} entries")

    def add(self, n: int, name: str) -> None:
        self.total += n
        if self.total > self.limits.max_total_bytes:
            raise IngestError(
                "archive_too_large", f"archive expands beyond {self.limits.max_total_bytes} bytes", [Problem(name, "too large")], 413
            )
        if self.total > 64 * CHUNK and self.total / self.archive_size > self.limits.max_ratio:
            raise IngestError(
                "archive_ratio_exceeded",
                f"archive compression ratio exceeds {self.limits.max_ratio:g}",
                [Problem(name, "suspicious compression ratio")],
                413,
            )


def _copy(src, dest: Path, declared: int, name: str, budget: _Budget) -> None:  # type: ignore[no-untyped-def]
    written = 0
    with open(dest, "wb") as out:
        while True:
            chunk = src.read(CHUNK)
            if not chunk:
                break
            written += len(chunk)
            if written > declared:
                raise IngestError("unsafe_archive", "entry larger than declared", [Problem(name, "size mismatch")])
            budget.add(len(chunk), name)
            out.write(chunk)
    if written != declared:
        raise IngestError("corrupt_archive", "archive entry is truncated", [Problem(name, "truncated entry")])


def extract(
    archive: Path, dest: Path, wanted: Callable[[str], bool], limits: ArchiveLimits
) -> tuple[dict[str, Path], list[str]]:
    """Check every entry, write the wanted regular files to `dest`; returns (name -> path, all file names)."""
    kind = sniff(archive)
    if kind == "unknown":
        raise IngestError("unsupported_archive", "archive must be a zip or a tar(.gz) file", status=415)
    dest.mkdir(parents=True, exist_ok=True)
    budget = _Budget(limits, archive.stat().st_size)
    if kind == "zip":
        return _extract_zip(archive, dest, wanted, budget)
    return _extract_tar(archive, dest, wanted, budget)


def _extract_zip(archive: Path, dest: Path, wanted: Callable[[str], bool], budget: _Budget) -> tuple[dict[str, Path], list[str]]:
    out: dict[str, Path] = {}
    names: list[str] = []
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise IngestError("corrupt_archive", "zip archive cannot be read") from exc
    with zf:
        infos = zf.infolist()
        declared_total = 0
        for info in infos:  # check everything before extracting anything
            budget.entry(info.filename)
            name = normalise_name(info.filename)
            ftype = stat.S_IFMT(info.external_attr >> 16)  # 0 when the creator stored no Unix type
            if ftype and ftype not in (stat.S_IFREG, stat.S_IFDIR):
                raise IngestError("unsafe_archive", "archive holds a link or special file", [Problem(info.filename, "not a regular file")])
            if info.flag_bits & 0x1:
                raise IngestError("unsupported_archive", "encrypted zip entries are not supported", [Problem(info.filename, "encrypted")])
            if info.is_dir():
                continue
            if info.compress_size and info.file_size / info.compress_size > budget.limits.max_ratio and info.file_size > CHUNK:
                raise IngestError(
                    "archive_ratio_exceeded", "zip entry compression ratio too high", [Problem(info.filename, "suspicious compression ratio")], 413
                )
            declared_total += info.file_size
            if declared_total > budget.limits.max_total_bytes:
                raise IngestError("archive_too_large", "archive expands beyond the limit", [Problem(info.filename, "too large")], 413)
            names.append(name)
        for info in infos:
            if info.is_dir():
                continue
            name = normalise_name(info.filename)
            if name in out or not wanted(name):
                continue
            path = dest / f"e{len(out):06d}"
            try:
                with zf.open(info) as src:
                    _copy(src, path, info.file_size, info.filename, budget)
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise IngestError("corrupt_archive", "zip entry cannot be read", [Problem(info.filename, "corrupt entry")]) from exc
            out[name] = path
    return out, names


def _extract_tar(archive: Path, dest: Path, wanted: Callable[[str], bool], budget: _Budget) -> tuple[dict[str, Path], list[str]]:
    out: dict[str, Path] = {}
    names: list[str] = []
    try:
        tf = tarfile.open(archive, mode="r|*")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise IngestError("corrupt_archive", "tar archive cannot be read") from exc
    try:
        with tf:
            for member in tf:
                budget.entry(member.name)
                name = normalise_name(member.name)
                if member.isdir():
                    continue
                if not member.isreg():
                    raise IngestError("unsafe_archive", "archive holds a link or special file", [Problem(member.name, "not a regular file")])
                names.append(name)
                budget.add(512, member.name)  # header block
                if name in out or not wanted(name):
                    budget.add(member.size, member.name)  # streamed past, still decompressed
                    continue
                src = tf.extractfile(member)
                if src is None:
                    raise IngestError("corrupt_archive", "tar entry cannot be read", [Problem(member.name, "unreadable")])
                path = dest / f"e{len(out):06d}"
                _copy(src, path, member.size, member.name, budget)
                out[name] = path
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise IngestError("corrupt_archive", "tar archive is corrupt or truncated") from exc
    return out, names
