"""Request ids and security headers, in one pass over each response.

Request id: the caller's `X-Request-Id` when sane, else a new one. It is bound to the log
context (every line logged while handling the request carries it), stored in the request state
(problem bodies carry it) and echoed in the `X-Request-Id` response header, so a user can quote
one id that finds the matching log lines.

Security headers: the API serves JSON and images only, so the policy forbids everything a
browser could run or embed, and answers are never cached (they carry instance state and QR
codes). A route may set its own (the docs page sets its CSP).

Applied by `relay.middleware.edge`, in its one pass over each request.
"""

from __future__ import annotations

import re

from starlette.types import Message, Scope

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


def request_id_of(scope: Scope) -> str:
    """The caller's `X-Request-Id` when sane, else a new one."""
    for name, value in scope["headers"]:
        if name == REQUEST_ID:
            if _SANE.fullmatch(value):
                return str(value.decode())  # typed Any in the scope
            break
    return "req_" + random_hex(8)


_SECURITY_NAMES = frozenset(name for name, _ in SECURITY_HEADERS)


def add_headers(message: Message, request_id: bytes) -> None:
    """The security headers a route did not set, and the request id, on a response's start."""
    headers = list(message.get("headers", ()))
    present = {name.lower() for name, _ in headers}
    if present.isdisjoint(_SECURITY_NAMES):  # the common case: all of them, as they are
        headers += SECURITY_HEADERS
    else:
        headers.extend(pair for pair in SECURITY_HEADERS if pair[0] not in present)
    headers.append((REQUEST_ID, request_id))
    message["headers"] = headers
