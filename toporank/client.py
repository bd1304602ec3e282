"""A small typed Python client of the TopoRank HTTP API (httpx; no torch needed).

    with Client("http://127.0.0.1:8000", api_key) as tr:
        ps = tr.upload_pilot_set("Dataset042_Brain/")          # a folder is zipped on the fly, streamed
        m = tr.register_model("checkpoint_final.pth", catalog="openmind-resencl-mae")
        job = tr.wait(tr.rank(ps, [m]), progress=print)
        print(tr.rank_result(job).models)
        tr.report(job, "report.html")                          # one self-contained HTML page
        conf = tr.wait_confirmation(tr.confirm(job, top_k=2, steps=250))   # fine-tune the top 2 by CV
        print(conf.top1_confirmed, conf.evaluation)

Every call returns the API's own response models (`app.schemas`); every API error raises
`ApiError` with the response's `code` and `detail`.
"""

from __future__ import annotations

import json
import os
import threading
import time
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from app.schemas import CalibrationOut, ConfirmationOut, EvaluationOut, ModelOut, PilotSetOut, RankingOut, RankOut

TERMINAL = ("succeeded", "partial", "failed", "cancelled")
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")


class ApiError(Exception):
    """An API error: HTTP `status`, the API's `code` and `detail`, and per-field `errors` when given."""

    def __init__(self, status: int, code: str, detail: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(f"{code}: {detail}")
        self.status, self.code, self.detail, self.errors = status, code, detail, errors or []

    @classmethod
    def from_response(cls, resp: httpx.Response) -> "ApiError":
        try:
            body = resp.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        return cls(resp.status_code, str(body.get("code") or f"http_{resp.status_code}"),
                   str(body.get("detail") or resp.reason_phrase), body.get("errors"))


class _ZipStream:
    """A folder zipped by a background thread into a pipe, read as a stream (no temporary file,
    no length: httpx sends it chunked). Entries are the folder's files, relative to it."""

    def __init__(self, folder: Path) -> None:
        self._files = sorted(p for p in folder.rglob("*") if p.is_file())
        if not self._files:
            raise ValueError(f"{folder} holds no files")
        read_fd, write_fd = os.pipe()
        self._reader = os.fdopen(read_fd, "rb")
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._write, args=(folder, os.fdopen(write_fd, "wb")), daemon=True)
        self._thread.start()

    def _write(self, folder: Path, sink: BinaryIO) -> None:
        try:
            with sink, zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED) as zf:  # NIfTI .gz is compressed already
                for path in self._files:
                    zf.write(path, arcname=str(path.relative_to(folder)))
        except BrokenPipeError:  # the upload stopped reading (an error answer): nothing more to send
            pass
        except BaseException as exc:  # noqa: BLE001 - re-raised by read()
            self._error = exc

    def read(self, size: int = -1) -> bytes:
        chunk = self._reader.read(size)
        if not chunk and self._error is not None:
            raise self._error
        return chunk

    def close(self) -> None:
        self._reader.close()
        self._thread.join(timeout=5)


def _id(obj: Any) -> str:
    """An object's id: a response model, a dict with `id`, or the id itself."""
    if isinstance(obj, str):
        return obj
    if isinstance(obj, Mapping):
        return str(obj["id"])
    return str(obj.id)


def _poll(fetch: Callable[[], Any], progress: Callable[[Any], None] | None, poll_s: float, timeout: float | None, what: str) -> Any:
    """`fetch()` every `poll_s` s until its `status` is terminal, calling `progress` after each fetch."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        obj = fetch()
        if progress is not None:
            progress(obj)
        if obj.status in TERMINAL:
            return obj
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"{what} {obj.id} still {obj.status} after {timeout} s")
        time.sleep(poll_s)


class Client:
    """The API at `base_url`, as the tenant of `api_key`."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 300.0, transport: httpx.BaseTransport | None = None) -> None:
        if not api_key:
            raise ValueError("an API key is needed (toporank create-tenant prints one)")
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers={"X-API-Key": api_key}, timeout=timeout, transport=transport)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, method: str, url: str, **kw: Any) -> httpx.Response:
        """The response of one request; ApiError for an error status or an unreachable server."""
        try:
            resp = self._http.request(method, url, **kw)
        except httpx.TransportError as exc:
            raise ApiError(0, "unreachable", f"cannot reach {self._http.base_url}: {type(exc).__name__}") from exc
        if resp.status_code >= 400:
            raise ApiError.from_response(resp)
        return resp

    def _call(self, method: str, url: str, **kw: Any) -> Any:
        resp = self._send(method, url, **kw)
        return resp.json() if resp.content else None

    # ------------------------------------------------------------------ pilot sets and models
    def upload_pilot_set(self, path: str | Path, name: str | None = None) -> PilotSetOut:
        """Upload an nnU-Net / MSD archive, or a dataset folder (zipped on the fly and streamed)."""
        path = Path(path)
        data = {"name": name} if name else {}
        if path.is_dir():
            stream = _ZipStream(path)
            try:
                body = self._call("POST", "/v1/pilot-sets", data=data,
                                  files={"archive": (f"{path.name}.zip", stream, "application/zip")})  # type: ignore[dict-item]
            finally:
                stream.close()
        elif path.is_file():
            if not path.name.lower().endswith(ARCHIVE_SUFFIXES):
                raise ValueError(f"{path.name}: a pilot set is a folder or a {', '.join(ARCHIVE_SUFFIXES)} archive")
            with open(path, "rb") as fh:
                body = self._call("POST", "/v1/pilot-sets", data=data, files={"archive": (path.name, fh, "application/octet-stream")})
        else:
            raise FileNotFoundError(f"{path} does not exist")
        return PilotSetOut.model_validate(body)

    def register_model(
        self,
        checkpoint: str | Path,
        spec: Mapping[str, Any] | None = None,
        *,
        catalog: str | None = None,
        name: str | None = None,
        wait: float = 300,
    ) -> ModelOut:
        """Register a checkpoint with its spec, or with a catalog entry's name alone; waits up to
        `wait` seconds for the worker's validation."""
        path = Path(checkpoint)
        if spec is None:
            spec = {"name": name or path.parent.name or path.stem, "format": "nnssl", **({"catalog": catalog} if catalog else {})}
        with open(path, "rb") as fh:
            body = self._call("POST", "/v1/models", params={"wait": wait}, data={"spec": json.dumps(dict(spec))},
                              files={"checkpoint": (path.name, fh, "application/octet-stream")})
        return ModelOut.model_validate(body)

    def list_models(self, shared: bool | None = None) -> list[ModelOut]:
        """Your models and the shared zoo (`shared=True`: the zoo only; `False`: yours only)."""
        params = {} if shared is None else {"shared": str(shared).lower()}
        return [ModelOut.model_validate(m) for m in self._call("GET", "/v1/models", params=params)["models"]]

    # ------------------------------------------------------------------ rankings
    def rank(
        self,
        pilot_set: Any,
        models: Iterable[Any],
        config: Mapping[str, Any] | None = None,
        *,
        fusion: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> RankingOut:
        """Start ranking `models` (objects or ids) on `pilot_set`; returns the queued job."""
        body: dict[str, Any] = {"pilot_set_id": _id(pilot_set), "model_ids": [_id(m) for m in models]}
        if config:
            body["config"] = dict(config)
        if fusion:
            body["fusion"] = dict(fusion)
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return RankingOut.model_validate(self._call("POST", "/v1/rankings", json=body, headers=headers))

    def ranking(self, ranking: Any) -> RankingOut:
        return RankingOut.model_validate(self._call("GET", f"/v1/rankings/{_id(ranking)}"))

    def wait(
        self,
        ranking: Any,
        progress: Callable[[RankingOut], None] | None = None,
        *,
        poll_s: float = 1.0,
        timeout: float | None = None,
    ) -> RankingOut:
        """Poll until the ranking ends, calling `progress(job)` after each poll; TimeoutError after `timeout` s."""
        return _poll(lambda: self.ranking(ranking), progress, poll_s, timeout, "ranking")

    def rank_result(self, ranking: Any, *, partial: bool = False, uncertainty: bool = True) -> RankOut:
        """The fused ordering (`GET /v1/rank`); `partial=True` ranks the models scored so far.

        With `uncertainty` (the default) it carries the bootstrap's intervals, rank probabilities
        and stability verdict in `.uncertainty`."""
        params = {"ranking_id": _id(ranking), "partial": str(partial).lower(), "uncertainty": str(uncertainty).lower()}
        return RankOut.model_validate(self._call("GET", "/v1/rank", params=params))

    def report(self, ranking: Any, path: str | Path, *, partial: bool = False) -> Path:
        """Save the ranking's self-contained HTML report (`GET /v1/rankings/{id}/report`) to `path`."""
        resp = self._send("GET", f"/v1/rankings/{_id(ranking)}/report", params={"partial": str(partial).lower()})
        out = Path(path)
        out.write_text(resp.text, encoding="utf-8")
        return out

    def evaluate(self, ranking: Any, truth: Mapping[Any, float]) -> EvaluationOut:
        """Compare the ranking with fine-tuning results (`truth`: model or id -> Dice)."""
        body = {"truth": {_id(k): float(v) for k, v in truth.items()}}
        return EvaluationOut.model_validate(self._call("POST", f"/v1/rankings/{_id(ranking)}/evaluation", json=body))

    # ------------------------------------------------------------------ confirmations, calibrations
    def confirm(
        self, ranking: Any, *, top_k: int | None = None, models: Iterable[Any] | None = None, steps: int = 120,
        folds: int | None = None, seed: int = 0, finetune: Mapping[str, Any] | None = None,
    ) -> ConfirmationOut:
        """Fine-tune the ranking's top `top_k` models (or `models`) by cross-validation over its pilot cases."""
        body: dict[str, Any] = {"steps": steps, "seed": seed}
        if top_k is not None:
            body["top_k"] = top_k
        if models is not None:
            body["models"] = [_id(m) for m in models]
        if folds is not None:
            body["folds"] = folds
        if finetune:
            body["finetune"] = dict(finetune)
        return ConfirmationOut.model_validate(self._call("POST", f"/v1/rankings/{_id(ranking)}/confirmations", json=body))

    def confirmation(self, confirmation: ConfirmationOut) -> ConfirmationOut:
        url = f"/v1/rankings/{confirmation.ranking_id}/confirmations/{confirmation.id}"
        return ConfirmationOut.model_validate(self._call("GET", url))

    def wait_confirmation(
        self, confirmation: ConfirmationOut, progress: Callable[[ConfirmationOut], None] | None = None, *,
        poll_s: float = 1.0, timeout: float | None = None,
    ) -> ConfirmationOut:
        """Poll until the confirmation ends, calling `progress(conf)` after each poll; TimeoutError after `timeout` s."""
        return _poll(lambda: self.confirmation(confirmation), progress, poll_s, timeout, "confirmation")

    def calibrate(self, kind: str = "auto") -> CalibrationOut:
        """Fit the fusion gate on this tenant's evaluations (`POST /v1/calibrations`)."""
        return CalibrationOut.model_validate(self._call("POST", "/v1/calibrations", json={"kind": kind}))
