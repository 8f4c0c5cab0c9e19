"""Reading a signed request: size limit, signature, replay — before a route sees the body."""

from __future__ import annotations

import time
from collections.abc import Mapping

from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope

from relay.auth import AuthError, Verified, verify_request
from relay.problems import Problem
from relay.state import RelayState

UNAUTHORIZED_HEADERS = {"WWW-Authenticate": 'WabusHMAC realm="wabus"'}
_HEADER_MAP = "wabus.headers"


def header_map(scope: Scope) -> dict[str, str]:
    """The request's headers as a dict (lower-case names; the first of repeated ones, as
    Starlette's `Headers.get` gives), built once per request and kept in its scope. A signed
    send reads six headers; each `Headers.get` scans the list, and a missing one raises."""
    found: dict[str, str] | None = scope.get(_HEADER_MAP)
    if found is None:
        found = scope[_HEADER_MAP] = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in reversed(scope["headers"])
        }
    return found


async def read_body(receive: Receive, headers: Mapping[str, str], limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes `limit` bytes (declared or streamed)."""
    declared = headers.get("content-length")
    if declared and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise Problem(413, "body_too_large", f"request body is larger than {limit} bytes")
    # ASGI messages read directly: Starlette's `request.stream()` is an async generator, which
    # cost more than the rest of this function on the send path
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise Problem(413, "body_too_large", f"request body is larger than {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def request_target(scope: Scope) -> str:
    """Path and query exactly as sent on the wire: what the client signed."""
    target: bytes = scope.get("raw_path") or scope["path"].encode()
    query: bytes = scope.get("query_string", b"")
    return (target + b"?" + query if query else target).decode("latin-1")


def replayed() -> Problem:
    """The answer to a signature used before (by the replay record, or a `v2` send's command
    id found in the command stream's duplicate window)."""
    return Problem(
        401, "replayed_request", "this signature was already used", headers=UNAUTHORIZED_HEADERS
    )


async def authenticate(
    scope: Scope,
    receive: Receive,
    state: RelayState,
    limit: int,
    replay_by_publish: bool = False,
) -> tuple[bytes, Verified]:
    """Verify size, signature, freshness, replay and the key's rates (requests, and body bytes);
    returns body and signature.

    `limit` is the route's body limit. With `replay_by_publish` (the route publishes
    one command whose id is the `Idempotency-Key` or `signed_command_id`, and the command
    stream's duplicate window outlasts the replay window) a `v2` signature is not recorded:
    that publish is its replay guard. A `v1` one always is: its `Idempotency-Key` is not
    signed, so a replay could add, change or drop it and get a new command id.
    Routes declared as `Endpoint`s get this called for them.
    """
    headers = header_map(scope)
    body = await read_body(receive, headers, limit)
    now = time.time()
    try:
        verified = verify_request(
            state.keys, headers, scope["method"], request_target(scope), body, now
        )
    except AuthError as error:
        raise Problem(401, error.code, error.detail, headers=UNAUTHORIZED_HEADERS) from error
    key_id = verified.key.key_id
    moment = time.monotonic()
    wait, over = state.limiter.take(key_id, moment), "rate limit"
    if not wait and body:
        wait, over = state.body_limiter.take(key_id, moment, len(body)), "rate of body bytes"
        if wait:
            state.limiter.give_back(key_id)
    if wait:
        raise Problem(
            429,
            "rate_limited",
            f"key {key_id!r} is over its {over}; retry after {wait:.2f}s",
            headers={"Retry-After": str(max(1, round(wait + 0.5)))},
        )
    if replay_by_publish and verified.covers_idempotency_key:
        return body, verified
    if not await state.replay.first_seen(verified.signature):
        raise replayed()
    return body, verified
