"""OpenAPI pieces the routes share: error responses and links from a created object to the
operations that take its id (so generated clients and schemathesis' stateful phase can follow them)."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from app.schemas import ErrorBody


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries documenting each status with the ErrorBody schema."""
    return {s: {"model": ErrorBody} for s in statuses}


def json_error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The same for a route whose own media type is not JSON (the HTML report): FastAPI would file
    the ErrorBody schema under the route's media type, but errors are always JSON."""
    ref = {"schema": {"$ref": "#/components/schemas/ErrorBody"}}
    return {s: {"description": HTTPStatus(s).phrase, "content": {"application/json": ref}} for s in statuses}


def links_from_id(status: int, id_param: str, *operation_ids: str) -> dict[int | str, dict[str, Any]]:
    """The `status` response links its body's `id` to `id_param` of each operation."""
    return {
        status: {
            "links": {
                op: {"operationId": op, "parameters": {id_param: "$response.body#/id"}} for op in operation_ids
            }
        }
    }
