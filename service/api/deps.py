"""Shared dependencies of the routers, as ``Annotated`` aliases: the settings and knowledge base the app was built
with, its metrics, and the API key of the request (with the scope an operation needs).

A key is sent as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. A key that is sent must be valid (401
otherwise), even where the operation needs none.

Each key dependency carries ``gate_scope(settings)``: the scope its operation needs (``""``: a key of any scope,
None: no key), and :data:`StreamedBody` carries ``gate_body_bytes(settings)``, the body size its operation accepts.
:class:`service.api.limits.RequestGate` reads both to authenticate a request and bound its body before any of it is
read; the key dependencies then reuse the key it verified.

Every dependency here is a coroutine: FastAPI runs a plain function dependency in a worker thread, a hop that costs
more than the lookups they do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
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


async def get_app_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    return request.app.state.settings


async def get_kb(request: Request) -> KnowledgeBase:
    """The knowledge base the app serves."""
    return request.app.state.kb


async def get_writer(request: Request) -> GroupWriter:
    """The process's group-commit writer (see :mod:`service.writer`)."""
    return request.app.state.writer


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
KB = Annotated[KnowledgeBase, Depends(get_kb)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
Writer = Annotated[GroupWriter, Depends(get_writer)]


#: Where :class:`~service.api.limits.RequestGate` leaves the key it verified, in the request's ``scope["state"]``.
GATE_KEY = "metaml_api_key"


def token_of(headers: Mapping[str, str]) -> str | None:
    """The API key a request sends (``X-API-Key``, else ``Authorization: Bearer``), None when it sends none."""
    token = headers.get("x-api-key")
    if not token:
        scheme, _, credentials = headers.get("authorization", "").partition(" ")
        token = credentials if scheme.lower() == "bearer" else None
    return token.strip() if token and token.strip() else None


def verify(settings: Settings, token: str) -> ApiKey:
    """The active key ``token`` is.

    Raises:
        Unauthorized: the key is malformed, unknown or revoked.
    """
    key = verify_key(settings.keys_path, token)
    if key is None:
        raise Unauthorized("invalid or revoked API key")
    return key


async def current_key(
    request: Request,
    settings: SettingsDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    header_key: Annotated[str | None, Depends(_api_key_header)],
) -> ApiKey | None:
    """The request's API key, None when none was sent.

    Raises:
        Unauthorized: a key was sent but is malformed, unknown or revoked.
    """
    token = header_key or (bearer.credentials if bearer is not None else None)
    if GATE_KEY in (request.scope.get("state") or {}) or not token or not token.strip():
        return key_of(request, settings, token)  # nothing to look up
    return await run_in_threadpool(key_of, request, settings, token)


def key_of(request: Request, settings: Settings, token: str | None) -> ApiKey | None:
    """The key :class:`~service.api.limits.RequestGate` verified for ``request``, else the key ``token`` is (None
    when no token was sent).

    Raises:
        Unauthorized: a key was sent but is malformed, unknown or revoked.
    """
    state = request.scope.get("state") or {}
    if GATE_KEY in state:
        return state[GATE_KEY]
    if not token or not token.strip():
        return None
    return verify(settings, token.strip())


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

    async def dependency(key: OptionalKey) -> ApiKey:
        return check_scope(key, scope)

    dependency.__name__ = f"require_{scope}"
    dependency.gate_scope = lambda settings: scope  # type: ignore[attr-defined]
    return dependency


async def read_access(settings: SettingsDep, key: OptionalKey) -> ApiKey | None:
    """Reads are open unless ``read_requires_key`` is set; then they need the ``read`` scope."""
    return may_read(settings, key)


def may_read(settings: Settings, key: ApiKey | None) -> ApiKey | None:
    """``key``, when reads are open or it holds the ``read`` scope.

    Raises:
        Unauthorized: reads need a key and none was sent.
        Forbidden: the key lacks the ``read`` scope.
    """
    return check_scope(key, "read") if settings.read_requires_key else key


read_access.gate_scope = lambda settings: "read" if settings.read_requires_key else None  # type: ignore[attr-defined]


async def key_when_reads_closed(settings: SettingsDep, key: OptionalKey) -> ApiKey | None:
    """The request's key; when ``read_requires_key`` is set, some key (its scope is the operation's to check).

    Raises:
        Unauthorized: reads need a key and none was sent.
    """
    if settings.read_requires_key and key is None:
        raise Unauthorized("this server requires an API key for every operation but health checks; send it as "
                           "'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
    return key


key_when_reads_closed.gate_scope = lambda settings: "" if settings.read_requires_key else None  # type: ignore


def _gate_rules(route: Any, settings: Settings, attribute: str) -> list[Any]:
    """The values the dependencies of ``route`` give for ``attribute(settings)`` (None values left out)."""
    found: list[Any] = []
    stack = list(getattr(getattr(route, "dependant", None), "dependencies", []))
    while stack:
        dep = stack.pop()
        rule = getattr(dep.call, attribute, None)
        if rule is not None and (value := rule(settings)) is not None:
            found.append(value)
        stack.extend(dep.dependencies)
    return found


def gate_scope(route: Any, settings: Settings) -> str | None:
    """The scope a request to ``route`` needs before its body is read: ``""`` for a key of any scope, None when
    it needs no key (from the ``gate_scope`` of the key dependencies it uses)."""
    needed = _gate_rules(route, settings, "gate_scope")
    named = [s for s in needed if s]
    return named[0] if named else ("" if needed else None)


async def streamed_body() -> None:
    """Marks an operation that reads its body as it arrives (uploads, dataset files): its body may be as large as
    ``max_request_bytes``. Every other operation's body is held to ``max_body_bytes``, since it is parsed whole."""


streamed_body.gate_body_bytes = lambda settings: settings.max_request_bytes  # type: ignore[attr-defined]


def gate_body_bytes(route: Any, settings: Settings) -> int:
    """The largest body a request to ``route`` may send."""
    return max(_gate_rules(route, settings, "gate_body_bytes"),
               default=min(settings.max_body_bytes, settings.max_request_bytes))


ReadKey = Annotated[ApiKey | None, Depends(read_access)]
AnyKeyWhenReadsClosed = Annotated[ApiKey | None, Depends(key_when_reads_closed)]
#: Route dependency of the operations that stream their body (see :func:`streamed_body`).
StreamedBody = Depends(streamed_body)
WriteKey = Annotated[ApiKey, Depends(require("write"))]
AnalystKey = Annotated[ApiKey, Depends(require("analyst"))]
