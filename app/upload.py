"""Streaming multipart parsing: file parts go straight to storage with their sha256 and size cap.

Starlette's form parser spools every file to a temporary file first; here each file part is
written once, under a random name in the storage's tmp folder, hashed while it streams and
refused as soon as it passes its cap. Memory use is bounded by one network chunk plus 1 MiB.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from app.errors import ApiError
from app.storage import Storage

TEXT_FIELD_CAP = 1 << 20
FLUSH_BYTES = 1 << 20


@dataclass
class UploadedFile:
    """A file part written to storage tmp; the caller moves or deletes `path`."""

    path: Path
    size: int = 0
    sha256: str = ""
    _hash: Any = field(default_factory=hashlib.sha256, repr=False)
    _fh: IO[bytes] | None = field(default=None, repr=False)


@dataclass
class MultipartResult:
    fields: dict[str, str]
    files: dict[str, UploadedFile]

    def cleanup(self) -> None:
        for f in self.files.values():
            f.path.unlink(missing_ok=True)  # before closing: an unlocked moment would let a sweep race us
            if f._fh is not None:
                f._fh.close()
                f._fh = None


class _Collector:
    """Parser callbacks: collect headers, route part data to text buffers or file events."""

    def __init__(self, file_caps: dict[str, int], text_fields: set[str], storage: Storage) -> None:
        self.file_caps = file_caps
        self.text_fields = text_fields
        self.storage = storage
        self.fields: dict[str, bytearray] = {}
        self.files: dict[str, UploadedFile] = {}
        self.pending: list[tuple[UploadedFile, bytes]] = []
        self.pending_bytes = 0
        self._hname = bytearray()
        self._hvalue = bytearray()
        self._headers: dict[str, bytes] = {}
        self._target: UploadedFile | bytearray | None = None
        self._name = ""

    # -- header callbacks
    def on_part_begin(self) -> None:
        self._headers = {}
        self._target = None

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._hname += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._hvalue += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._hname.decode("latin-1").lower()] = bytes(self._hvalue)
        self._hname.clear()
        self._hvalue.clear()

    def on_headers_finished(self) -> None:
        disposition, params = parse_options_header(self._headers.get("content-disposition", b""))
        if disposition != b"form-data" or b"name" not in params:
            raise ApiError(400, "malformed_multipart", "each part needs Content-Disposition: form-data; name=...")
        name = params[b"name"].decode("utf-8", "replace")
        self._name = name
        if name in self.fields or name in self.files:
            raise ApiError(422, "duplicate_field", f"form field {name!r} given more than once")
        if name in self.file_caps:
            upload = UploadedFile(path=self.storage.temp_path("upload"))
            self.files[name] = upload
            self._target = upload
        elif name in self.text_fields:
            self.fields[name] = bytearray()
            self._target = self.fields[name]
        else:
            raise ApiError(422, "unexpected_field", f"unexpected form field {name!r}")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        target = self._target
        n = end - start
        if isinstance(target, bytearray):
            if len(target) + n > TEXT_FIELD_CAP:
                raise ApiError(413, "field_too_large", f"form field {self._name!r} exceeds {TEXT_FIELD_CAP} bytes")
            target += data[start:end]
        elif isinstance(target, UploadedFile):
            target.size += n
            cap = self.file_caps[self._name]
            if target.size > cap:
                raise ApiError(413, "upload_too_large", f"{self._name!r} exceeds the limit of {cap} bytes")
            self.pending.append((target, bytes(data[start:end])))
            self.pending_bytes += n

    def on_part_end(self) -> None:
        self._target = None

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
        }

    def flush(self) -> None:
        """Write pending file bytes (run in a worker thread: hashing and disk I/O block)."""
        for upload, chunk in self.pending:
            if upload._fh is None:
                upload._fh = self.storage.open_temp(upload.path)
            upload._fh.write(chunk)
            upload._hash.update(chunk)
        self.pending.clear()
        self.pending_bytes = 0

    def finish(self) -> None:
        """Flush what is left; the files stay open (and locked, so no sweep takes them) until
        `MultipartResult.cleanup`, after the caller has moved or ingested them."""
        self.flush()
        for upload in self.files.values():
            if upload._fh is None:
                upload._fh = self.storage.open_temp(upload.path)
            upload._fh.flush()
            upload.sha256 = upload._hash.hexdigest()


async def parse_multipart(
    request: Request, storage: Storage, *, file_caps: dict[str, int], text_fields: set[str]
) -> MultipartResult:
    """Parse a multipart/form-data body; `file_caps` maps file field names to their byte caps."""
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or b"boundary" not in params:
        raise ApiError(415, "unsupported_media_type", "expected multipart/form-data")
    declared = request.headers.get("content-length")
    total_cap = sum(file_caps.values()) + TEXT_FIELD_CAP * (len(text_fields) + 1)
    if declared is not None and declared.isdigit() and int(declared) > total_cap:
        raise ApiError(413, "upload_too_large", f"request body exceeds the limit of {total_cap} bytes")
    collector = _Collector(file_caps, text_fields, storage)
    parser = MultipartParser(params[b"boundary"], collector.callbacks())  # type: ignore[arg-type]
    try:
        async for chunk in request.stream():
            if chunk:
                parser.write(chunk)
            if collector.pending_bytes >= FLUSH_BYTES:
                await run_in_threadpool(collector.flush)
        parser.finalize()
        await run_in_threadpool(collector.finish)
    except ApiError:
        MultipartResult({}, collector.files).cleanup()
        raise
    except Exception as exc:  # malformed body: the parser raises its own error types
        MultipartResult({}, collector.files).cleanup()
        raise ApiError(400, "malformed_multipart", "could not parse the multipart body") from exc
    fields = {k: v.decode("utf-8", "replace") for k, v in collector.fields.items()}
    return MultipartResult(fields, collector.files)
