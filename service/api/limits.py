"""The request gate, applied before routing: authentication and body limits come before any byte of a body is read.

For every HTTP request, :class:`RequestGate`

1. authenticates it for its operation's scope (from the route's key dependencies, see ``service.api.deps``): a key
   that is sent is verified, a missing key where one is needed is 401, a key lacking the scope 403; all answered at
   once, without reading the body;
2. refuses a declared ``Content-Length`` above the operation's limit (413) at once: ``max_request_bytes`` for the
   operations that stream their body (uploads, dataset files; ``deps.StreamedBody``), ``max_body_bytes`` for the
   others, whose bodies are parsed whole;
3. hands the application a ``receive`` that counts the body as it arrives (413 as soon as it passes the limit) and
   gives each part of it ``body_timeout_s`` to arrive (408 after a longer pause).

Nothing is buffered here: the application reads the body as a stream (uploads parse it as it arrives). Every answer
given before the body was read to its end closes the connection, so an unread body is never read.
"""

from __future__ import annotations

from collections.abc import Sequence

import anyio
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.deps import GATE_KEY, check_scope, gate_body_bytes, gate_scope, token_of, verify
from service.api.errors import answer_for, error_response
from service.errors import ServiceError, Unauthorized
from service.keys import cached_key
from service.settings import Settings

#: Most (method, path) pairs whose rules the gate remembers (all are forgotten when it is reached).
_MAX_RULES = 4096

#: The web pages' prefix: they check the key themselves, so a refused key gets the page's key form, not JSON.
UI_PREFIX = "/ui"


class RequestGate:
    """Pure ASGI middleware: authenticate before the body, bound the body's size and pauses (see the module).

    Args:
        app: the application.
        settings: its settings (limits, whether reads need a key, the key file).
        routes: the application's routes, whose key dependencies say what each operation needs.
    """

    def __init__(self, app: ASGIApp, settings: Settings, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.settings = settings
        self.timeout_s = settings.body_timeout_s
        self.routes = [(route, gate_scope(route, settings), gate_body_bytes(route, settings)) for route in routes]
        self._known: dict[tuple[str, str, str], tuple[str | None, int]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        declared = headers.get("content-length")
        has_body = bool(declared and declared.strip() != "0") or "chunked" in headers.get("transfer-encoding", "")
        state = {"complete": not has_body}

        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start" and not state["complete"]:
                message = {**message, "headers": [*[(k, v) for k, v in message.get("headers", [])
                                                    if k.lower() != b"connection"], (b"connection", b"close")]}
            await send(message)

        needed, max_bytes = self._rules(scope)
        try:
            if not scope.get("path", "").startswith(UI_PREFIX):  # pages gate themselves, answering a key form
                await self._authenticate(scope, headers, needed)
        except ServiceError as e:
            await answer_for(e, retry_after_s=self.settings.retry_after_s)(scope, receive, send_closing)
            return
        if declared is not None:
            try:
                too_large = int(declared) > max_bytes
            except ValueError:
                too_large = False
            if too_large:
                response = error_response(413, "payload_too_large", f"the request body ({int(declared):,} bytes) "
                                          f"exceeds the limit of {max_bytes:,} bytes for this operation",
                                          {"max_bytes": max_bytes})
                await response(scope, receive, send_closing)
                return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            if state["complete"]:
                return await receive()
            try:
                with anyio.fail_after(self.timeout_s):
                    message = await receive()
            except TimeoutError:
                raise HTTPException(408, f"the request body paused for more than {self.timeout_s:g}s; send it "
                                    "without pauses") from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    raise HTTPException(413, f"the request body exceeds the limit of {max_bytes:,} bytes for this "
                                        "operation")
                if not message.get("more_body", False):
                    state["complete"] = True
            elif message["type"] == "http.disconnect":
                state["complete"] = True
            return message

        await self.app(scope, limited_receive, send_closing)

    async def _authenticate(self, scope: Scope, headers: dict[str, str], needed: str | None) -> None:
        """Verify the key a request sends and check it against its operation's scope; leave it for the routes.

        Raises:
            Unauthorized: a key is needed and none was sent, or the one sent is not valid.
            Forbidden: the key lacks the scope.
            KeyStoreError: the key file cannot be read.
        """
        token = token_of(headers)
        key = None
        if token:  # a key this process verified, while the key file is unchanged; else looked up off the loop
            key = cached_key(self.settings.keys_path, token) or await anyio.to_thread.run_sync(
                verify, self.settings, token)
        if needed:
            check_scope(key, needed)
        elif needed is not None and key is None:
            raise Unauthorized("this operation needs an API key; send it as 'Authorization: Bearer <key>' or "
                               "'X-API-Key: <key>'")
        scope.setdefault("state", {})[GATE_KEY] = key

    def _rules(self, scope: Scope) -> tuple[str | None, int]:
        """The scope the request's operation needs and the largest body it accepts (remembered per method and
        path: matching every route costs more than the rest of the gate)."""
        known = (scope.get("method", ""), scope.get("path", ""), scope.get("root_path", ""))
        rules = self._known.get(known)
        if rules is None:
            rules = None, min(self.settings.max_body_bytes, self.settings.max_request_bytes)
            for route, needed, max_bytes in self.routes:
                match, _ = route.matches(scope)
                if match == Match.FULL:
                    rules = needed, max_bytes
                    break
            if len(self._known) >= _MAX_RULES:
                self._known.clear()
            self._known[known] = rules
        return rules
