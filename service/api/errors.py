"""The one table from errors to HTTP answers, and the handlers that apply it.

Every error answer has the body ``{"error": {"code": str, "message": str, "details": any}}``. Messages are written
for the client; stack traces and server paths never appear in an answer (a 500 says only that the server failed and
is logged in full on the server).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from collector.errors import (
    CollectorError,
    FormatError,
    KnowledgeBaseNotFound,
    QueryRefused,
    QueryTimeout,
    StoreBusy,
    StoreError,
    StoreUnavailable,
)
from metaml.errors import ArtifactError, MetamlError, TrackingError
from service.errors import (
    BadRequest,
    BatchTooLarge,
    Forbidden,
    KeyStoreError,
    NotFound,
    PayloadTooLarge,
    ServiceError,
    Unauthorized,
    UnsupportedMediaType,
)

log = logging.getLogger("metaml.service")


class ModelUnavailable(ServiceError):
    """No meta-model is loaded (none promoted yet, or the promoted one could not be loaded at startup)."""


class CurveModelUnavailable(ModelUnavailable):
    """The served model artifact holds no curve estimator (its knowledge base had no runs with learning curves)."""


class UnknownDataset(ServiceError):
    """A task names a dataset whose meta-features the knowledge base does not hold, and sends none."""

#: error class -> (HTTP status, error code, whether the message may be shown). The first matching row wins, so
#: subclasses come before their bases.
ERROR_TABLE: list[tuple[type[BaseException], int, str, bool]] = [
    (BadRequest, 400, "bad_request", True),
    (Unauthorized, 401, "unauthorized", True),
    (Forbidden, 403, "forbidden", True),
    (NotFound, 404, "not_found", True),
    (PayloadTooLarge, 413, "payload_too_large", True),
    (UnsupportedMediaType, 415, "unsupported_media_type", True),
    (BatchTooLarge, 422, "batch_too_large", True),
    (UnknownDataset, 422, "unknown_dataset", True),
    (CurveModelUnavailable, 503, "curve_model_unavailable", True),
    (ModelUnavailable, 503, "model_unavailable", True),
    (KeyStoreError, 503, "key_store_unavailable", False),
    (ServiceError, 400, "bad_request", True),
    (QueryRefused, 400, "query_refused", True),
    (QueryTimeout, 400, "query_timeout", True),
    (FormatError, 400, "bad_input", True),
    (StoreBusy, 503, "knowledge_base_busy", False),
    (KnowledgeBaseNotFound, 503, "knowledge_base_unavailable", False),
    (StoreUnavailable, 503, "knowledge_base_unavailable", False),
    (StoreError, 500, "store_error", False),
    (CollectorError, 400, "bad_request", True),
    (TrackingError, 503, "model_registry_unavailable", False),
    (ArtifactError, 500, "model_artifact_error", False),
    (MetamlError, 500, "internal_error", False),
]

#: What a client is told when the message itself is not for it.
_GENERIC = {
    "key_store_unavailable": "the API key store cannot be read; try again later",
    "knowledge_base_busy": "the knowledge base is busy with another write; retry after the Retry-After delay",
    "knowledge_base_unavailable": "the knowledge base is not available",
    "store_error": "the knowledge base could not be read or written; nothing of this request was stored",
    "internal_error": "internal server error",
    "model_registry_unavailable": "the model registry cannot be read or written; try again later",
    "model_artifact_error": "the model version's artifact cannot be loaded; nothing was changed",
}

_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 406: "not_acceptable", 408: "request_timeout", 413: "payload_too_large",
               415: "unsupported_media_type", 422: "validation_error", 429: "too_many_requests",
               503: "service_unavailable"}


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    """The JSON body of every error answer."""
    return {"error": {"code": code, "message": message, "details": details}}


def error_response(status: int, code: str, message: str, details: Any = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message, details), status_code=status, headers=headers)


def classify(exc: BaseException) -> tuple[int, str, bool]:
    """(status, code, message shown) of ``exc`` from :data:`ERROR_TABLE`; unknown errors are 500s."""
    for cls, status, code, shown in ERROR_TABLE:
        if isinstance(exc, cls):
            return status, code, shown
    return 500, "internal_error", False


def _headers_for(status: int, retry_after_s: int) -> dict[str, str] | None:
    if status == 503:
        return {"Retry-After": str(retry_after_s)}
    if status == 401:
        return {"WWW-Authenticate": 'Bearer realm="metaml"'}
    return None


def answer_for(exc: Exception, *, retry_after_s: int) -> JSONResponse:
    """The error answer for a known error (one of :data:`ERROR_TABLE`'s classes)."""
    status, code, shown = classify(exc)
    message = (exc.message if isinstance(exc, ServiceError) else " ".join(str(exc).split())) if shown \
        else _GENERIC[code]
    details = exc.details if isinstance(exc, ServiceError) else None
    return error_response(status, code, message, details, _headers_for(status, retry_after_s))


def install_error_handlers(app: FastAPI, *, retry_after_s: int) -> None:
    """Register the handlers that turn every error into the one error body."""

    async def handle_known(request: Request, exc: Exception) -> JSONResponse:
        answer = answer_for(exc, retry_after_s=retry_after_s)
        if answer.status_code >= 500:
            log.warning("%s %s -> %d: %s", request.method, request.url.path, answer.status_code, exc)
        return answer

    async def handle_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in exc.errors()]
        first = details[0] if details else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"])
        return error_response(422, "validation_error", f"{where}: {first['msg']}" if where else str(first["msg"]),
                              details)

    async def handle_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        headers = dict(exc.headers or {})
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path}"
        return error_response(exc.status_code, code, message, None, headers or None)

    async def handle_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", _GENERIC["internal_error"])

    for cls in (ServiceError, CollectorError, MetamlError):
        app.add_exception_handler(cls, handle_known)
    app.add_exception_handler(RequestValidationError, handle_validation)
    app.add_exception_handler(StarletteHTTPException, handle_http)
    app.add_exception_handler(Exception, handle_unexpected)
