"""Shared dependencies of the routers, as ``Annotated`` aliases: the settings and knowledge base the app was built
with, its metrics, and the API key of the request (with the scope an operation needs).

A key is sent as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. A key that is sent must be valid (401
otherwise), even where the operation needs none.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from collector.store import KnowledgeBase
from service.api.metrics import Metrics
from service.errors import Forbidden, Unauthorized
from service.keys import ApiKey, verify_key
from service.settings import Settings
from service.writer import GroupWriter

_bearer = HTTPBearer(auto_error=False, scheme_name="bearer", description="Authorization: Bearer mk_<id>_<secret>")
_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="apiKey",
                               description="X-API-Key: mk_<id>_<secret>")


def get_app_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    return request.app.state.settings


def get_kb(request: Request) -> KnowledgeBase:
    """The knowledge base the app serves."""
    return request.app.state.kb


def get_writer(request: Request) -> GroupWriter:
    """The process's group-commit writer (see :mod:`service.writer`)."""
    return request.app.state.writer


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
KB = Annotated[KnowledgeBase, Depends(get_kb)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
Writer = Annotated[GroupWriter, Depends(get_writer)]


def current_key(
    settings: SettingsDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    header_key: Annotated[str | None, Depends(_api_key_header)],
) -> ApiKey | None:
    """The request's API key, None when none was sent.

    Raises:
        Unauthorized: a key was sent but is malformed, unknown or revoked.
    """
    token = header_key or (bearer.credentials if bearer is not None else None)
    if not token:
        return None
    key = verify_key(settings.keys_path, token.strip())
    if key is None:
        raise Unauthorized("invalid or revoked API key")
    return key


OptionalKey = Annotated[ApiKey | None, Depends(current_key)]


def check_scope(key: ApiKey | None, scope: str) -> ApiKey:
    """``key`` when it holds ``scope``.

    Raises:
        Unauthorized: no key.
        Forbidden: the key lacks the scope.
    """
    if key is None:
        raise Unauthorized(f"this operation needs an API key with the '{scope}' scope; send it as "
                           "'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
    if not key.allows(scope):
        raise Forbidden(f"API key {key.key_id} ({key.name}) lacks the '{scope}' scope this operation needs",
                        details={"needed": scope, "granted": list(key.scopes)})
    return key


def require(scope: str) -> Callable[[ApiKey | None], ApiKey]:
    """A dependency that answers 401/403 unless the request's key holds ``scope``."""

    def dependency(key: OptionalKey) -> ApiKey:
        return check_scope(key, scope)

    dependency.__name__ = f"require_{scope}"
    return dependency


def read_access(settings: SettingsDep, key: OptionalKey) -> ApiKey | None:
    """Reads are open unless ``read_requires_key`` is set; then they need the ``read`` scope."""
    return check_scope(key, "read") if settings.read_requires_key else key


ReadKey = Annotated[ApiKey | None, Depends(read_access)]
WriteKey = Annotated[ApiKey, Depends(require("write"))]
AnalystKey = Annotated[ApiKey, Depends(require("analyst"))]
