"""What several routers share: how a router is made, error answers for the OpenAPI document, media types of request
bodies."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from service.api._json import FastJSONRoute
from service.api.schemas import ErrorBody

MULTIPART = "multipart/form-data"


def api_router(**options: Any) -> APIRouter:
    """A router of the API (``APIRouter`` options): its routes read JSON bodies with orjson (:class:`FastJSONRoute`)."""
    return APIRouter(route_class=FastJSONRoute, **options)


#: Error answers every /v1 operation may give, for the OpenAPI document.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Malformed body, unreadable file, refused query."},
    401: {"model": ErrorBody, "description": "No API key, or an invalid or revoked one."},
    403: {"model": ErrorBody, "description": "The key lacks the needed scope."},
    413: {"model": ErrorBody, "description": "The body is larger than max_request_bytes (uploads) or max_body_bytes."},
    415: {"model": ErrorBody, "description": "A Content-Type the operation does not read."},
    422: {"model": ErrorBody, "description": "Invalid parameters, or more records than max_batch_records."},
    503: {"model": ErrorBody, "description": "The knowledge base is busy or unavailable; see Retry-After."},
}


def media_type(request: Request) -> str:
    """The request's Content-Type without parameters, lower-cased ('' when absent)."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def is_json(media: str) -> bool:
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))
