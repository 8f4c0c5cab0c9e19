"""The relay's middleware as one pass over each request: request id and security headers
(`hygiene`), CORS (when `WABUS_CORS_ORIGINS` is set), the failed-auth guard (`guard`), the body
deadline (`deadline`) and the hot path's router (`hot`).

Why one pass: as five layers each request went through five coroutine frames and four wrappers
around `send`, on the hot path of every send. Here one coroutine applies them, with one wrapper
around `send`: 10-15 µs less per send in process (docs/api.md "Performance").

It runs outside Starlette's own layers (`relay.app.RelayApp`), so its headers and request id
are on every answer, a 500 from Starlette's server-error middleware included.

The order is the layers' order, outermost first, and so is what a client sees: the request id
covers everything; CORS answers a preflight itself (also for a client the guard refuses), and
its headers go on every answer, the guard's 429 included; the guard refuses a blocked address
before its body is read and counts the 401s answered to it; the body deadline covers every
read of the body. The headers of an answer are applied in that order too: CORS's, then the
security headers a route did not set, then `X-Request-Id`.
"""

from __future__ import annotations

from typing import Any

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from structlog.contextvars import bind_contextvars, reset_contextvars

from relay.endpoints import Endpoint
from relay.middleware.deadline import BodyDeadlines
from relay.middleware.guard import FailedAuthGuard, client_key
from relay.middleware.hot import HotRoutes, serve
from relay.middleware.hygiene import add_headers, request_id_of
from relay.problems import problem_response


class Edge:
    """`cors` are `CORSMiddleware`'s options (None: no CORS); `auth_failure_limit` failed
    authentications per `auth_failure_window` seconds and address (0: no guard);
    `body_timeout` seconds for a body (0: no deadline)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        cors: dict[str, Any] | None = None,
        auth_failure_limit: int = 0,
        auth_failure_window: float = 1.0,
        body_timeout: float = 0.0,
        endpoints: list[Endpoint] | None = None,
    ) -> None:
        self.app = app
        self.cors = None if cors is None else CORSMiddleware(app, **cors)
        self.guard = FailedAuthGuard(auth_failure_limit, auth_failure_window)
        self.body_deadlines = BodyDeadlines(body_timeout) if body_timeout > 0 else None
        self.hot = HotRoutes(endpoints or [])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        tokens = bind_contextvars(request_id=request_id)
        try:
            await self._serve(scope, receive, send, request_id.encode())
        finally:
            reset_contextvars(**tokens)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, request_id: bytes) -> None:
        cors, cors_headers = self.cors, None
        if cors is not None:
            cors_headers = Headers(scope=scope)
            if scope["method"] == "OPTIONS" and _preflight(cors_headers):
                preflight = cors.preflight_response(request_headers=cors_headers)
                await preflight(scope, receive, _Answer(send, request_id, None, None))
                return
        guarded = self.guard.applies(scope)
        key = client_key(scope) if guarded else ""
        answer = _Answer(send, request_id, cors, cors_headers)
        if guarded and (wait := self.guard.wait(key)):
            refusal = problem_response(self.guard.refusal(wait), request_id.decode())
            await refusal(scope, receive, answer)
            return
        reading = None
        if self.body_deadlines is not None:
            reading = self.body_deadlines.start(receive)
            receive = reading.receive
        try:
            endpoint = self.hot.match(scope)
            if endpoint is not None:
                await serve(endpoint, scope, receive, answer)
            else:
                await self.app(scope, receive, answer)
        finally:
            if reading is not None:
                reading.stop()
        if guarded and answer.status == 401:
            self.guard.failed(key)


def _preflight(headers: Headers) -> bool:
    return "origin" in headers and "access-control-request-method" in headers


class _Answer:
    """The one wrapper around `send`: notes the status (for the guard), then adds CORS's
    headers, the security headers and the request id to the response's start."""

    __slots__ = ("_cors", "_cors_headers", "_request_id", "_send", "status")

    def __init__(
        self,
        send: Send,
        request_id: bytes,
        cors: CORSMiddleware | None,
        cors_headers: Headers | None,
    ) -> None:
        self._send = send
        self._request_id = request_id
        self._cors = cors
        self._cors_headers = cors_headers
        self.status = 0

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            if self._cors is not None and self._cors_headers is not None:
                await self._cors.send(message, self._finish, self._cors_headers)
                return
            add_headers(message, self._request_id)
        await self._send(message)

    async def _finish(self, message: Message) -> None:
        """After CORS's headers: the security headers and the request id."""
        add_headers(message, self._request_id)
        await self._send(message)
