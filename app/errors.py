"""API errors: JSON `{code, detail, errors?}` with a stable machine-readable `code`.

`errors` lists per-file problems of an upload (`{file, problem}`, `file` being the path inside the
client's own archive) or per-field problems of a request body (`{field, problem}`).
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("toporank.api")
DATABASE_RETRY_AFTER_S = 5


class ApiError(Exception):
    """Raise anywhere in a request to answer `status` with `{code, detail, errors?}`."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.errors = errors
        self.headers = headers

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "detail": self.detail}
        if self.errors:
            out["errors"] = self.errors
        return out


def not_found(kind: str) -> ApiError:
    """404 for a missing object or one owned by another tenant (indistinguishable on purpose)."""
    return ApiError(404, f"{kind}_not_found", f"{kind.replace('_', ' ')} not found")


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves on the request's path, for the `Allow` header of a 405
    (Starlette's own names only the first route that matched the path, e.g. POST on /v1/models,
    which also serves GET). Read from the OpenAPI document (every API operation is in it) and the
    plain routes outside it (the docs pages), built once per app."""
    table = getattr(request.app.state, "allow_table", None)
    if table is None:
        table = []
        for template, ops in request.app.openapi().get("paths", {}).items():
            pattern = re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(template))
            table.append((re.compile(f"^{pattern}$"), {m.upper() for m in ops if m.upper() in _HTTP_METHODS}))
        for route in request.app.router.routes:
            if getattr(route, "path_regex", None) is not None and getattr(route, "methods", None):
                table.append((route.path_regex, set(route.methods)))
        request.app.state.allow_table = table
    path = request.url.path
    return sorted(set().union(*[methods for regex, methods in table if regex.match(path)]))


_HTTP_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"}


class ErrorResponse(JSONResponse):
    """An error body as ASCII JSON: an error may quote the client's own strings back (a model id),
    and one holding a lone surrogate cannot be encoded as UTF-8, which would turn a 404 into a 500."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> ErrorResponse:
        return ErrorResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> ErrorResponse:
        errors = [
            {"field": ".".join(str(p) for p in err.get("loc", ()) if p != "body"), "problem": err.get("msg", "")}
            for err in exc.errors()
        ]
        body = {"code": "validation_error", "detail": "request failed validation", "errors": errors}
        return ErrorResponse(body, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> ErrorResponse:
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request))
        return ErrorResponse({"code": code, "detail": str(exc.detail)}, status_code=exc.status_code, headers=headers or None)

    @app.exception_handler(OperationalError)
    async def _database_down(_request: Request, exc: OperationalError) -> ErrorResponse:
        # the registry database is restarting or unreachable: a retryable 503, never a traceback
        log.warning("registry database unreachable: %s", type(exc.orig).__name__ if exc.orig is not None else type(exc).__name__)
        return ErrorResponse({"code": "database_unavailable", "detail": "the registry database is unreachable; retry shortly"},
                            status_code=503, headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)})

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, _exc: Exception) -> ErrorResponse:
        return ErrorResponse({"code": "internal_error", "detail": "internal server error"}, status_code=500)
