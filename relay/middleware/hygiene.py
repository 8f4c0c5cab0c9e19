"""Request ids and security headers, in one pass over each response.

Request id: the caller's `X-Request-Id` when sane, else a new one. It is bound to the log
context (every line logged while handling the request carries it), stored in the request state
(problem bodies carry it) and echoed in the `X-Request-Id` response header, so a user can quote
one id that finds the matching log lines.

Security headers: the API serves JSON and images only, so the policy forbids everything a
browser could run or embed, and answers are never cached (they carry instance state and QR
codes). A route may set its own (the docs page sets its CSP).

One middleware rather than two: each layer wraps every response message, and this is on the
hot path of every send.
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from structlog.contextvars import bind_contextvars, reset_contextvars

from schemas.ids import random_hex

REQUEST_ID = b"x-request-id"
_SANE = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"strict-transport-security", b"max-age=63072000; includeSubDomains"),
    (b"cache-control", b"no-store"),
)


def _incoming(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == REQUEST_ID:
            return value.decode() if _SANE.fullmatch(value) else None
    return None


class HygieneMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming(scope) or "req_" + random_hex(8)
        scope.setdefault("state", {})["request_id"] = request_id
        id_header = (REQUEST_ID, request_id.encode())

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers.extend(pair for pair in SECURITY_HEADERS if pair[0] not in present)
                headers.append(id_header)
                message["headers"] = headers
            await send(message)

        tokens = bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            reset_contextvars(**tokens)
