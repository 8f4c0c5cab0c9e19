"""Slow clients cut off, guessers slowed down (issue 10), against a real relay on a real socket
and a real nats-server: connections dribbling their head or body are closed while signed
requests are served, and a flood of bad signatures from one client address is answered 429
while another client is served. Timings are measured in bench/slow_clients.py, not here."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from ipaddress import ip_network

import httpx
import pytest
from nats.aio.client import Client as NATS
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from relay.app import create_app
from relay.client import signed_headers
from relay.middleware.edge import Edge
from relay.problems import EXCEPTION_HANDLERS, PROBLEM_JSON
from tests.conftest import API_KEY_ID, API_SECRET
from tests.relay_helpers import commands_stored, signed
from tests.support import running
from wabus.settings import Settings

SLOW_CONNECTIONS = 50
FLOOD = 200
SEND = "/v1/instances/acme/messages"
MESSAGE = json.dumps({"to": "5511999999999", "text": "hi"}).encode()


@contextlib.asynccontextmanager
async def serving(
    app: ASGIApp, header_timeout: float = 10.0, body_timeout: float = 60.0
) -> AsyncIterator[tuple[str, int]]:
    """`app` on a loopback port with these head and body deadlines; yields its URL and port."""
    async with running(app, header_timeout=header_timeout, body_timeout=body_timeout) as url:
        yield url, int(url.rpartition(":")[2])


def relay(settings: Settings) -> contextlib.AbstractAsyncContextManager[tuple[str, int]]:
    """The relay with its head and body deadlines from `settings`."""
    return serving(create_app(settings), settings.header_timeout, settings.body_timeout)


async def dribble(port: int, data: bytes, pause: float = 0.2) -> bytes:
    """Send `data` a byte at a time until the server closes; what the server answered."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def trickle() -> None:
        for byte in data:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(pause)

    sending = asyncio.create_task(trickle())
    try:
        return await reader.read()  # until the server closes the connection
    except ConnectionResetError:  # closed while bytes of ours were still unread
        return b""
    finally:
        sending.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await sending
        writer.close()


def slow_head(index: int) -> bytes:
    return f"GET /healthz HTTP/1.1\r\nHost: relay\r\nX-Slow-{index}: ".encode() + b"a" * 10_000


async def test_slow_heads_and_bodies_are_cut_off_while_a_signed_request_is_served(
    settings: Settings, nc: NATS
) -> None:
    deadlines = settings.model_copy(update={"header_timeout": 3.0, "body_timeout": 1.0})
    async with relay(deadlines) as (base, port):
        heads = [asyncio.create_task(dribble(port, slow_head(i))) for i in range(SLOW_CONNECTIONS)]
        await asyncio.sleep(0.3)  # the slow clients are connected and dribbling
        assert not any(task.done() for task in heads)  # far within their 3 s

        # meanwhile a signed request is served (positive control: the relay answers)
        served = await signed(base, "POST", SEND, {"to": "5511999999999", "text": "meanwhile"})
        assert served.status_code == 202, served.text

        answers = await asyncio.wait_for(asyncio.gather(*heads), 60)
        timed_out = [a for a in answers if b" 408 " in a.split(b"\r\n", 1)[0]]
        assert len(timed_out) == SLOW_CONNECTIONS, answers[:3]
        assert all(b'"code": "header_timeout"' in a for a in timed_out)

        # a signed send whose body stalls after its head: 408 body_timeout, nothing published
        stalled = await asyncio.wait_for(_stalled_body(port), 60)
        status_line, _, rest = stalled.partition(b"\r\n")
        assert b" 408 " in status_line, stalled
        assert b"application/problem+json" in rest
        assert b'"code":"body_timeout"' in rest
    assert await commands_stored(nc, settings) == 1  # "meanwhile" only


async def _stalled_body(port: int) -> bytes:
    """A signed send whose head arrives at once and whose body never completes."""
    signature = signed_headers(API_KEY_ID, API_SECRET, "POST", SEND, MESSAGE, time.time())
    head = "".join(f"{name}: {value}\r\n" for name, value in signature.items())
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        (
            f"POST {SEND} HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(MESSAGE)}\r\n{head}\r\n"
        ).encode()
        + MESSAGE[:5]
    )
    await writer.drain()
    try:
        return await reader.read()
    finally:
        writer.close()


async def test_a_body_deadline_passing_while_the_route_is_busy_is_answered_at_the_next_read() -> (
    None
):
    """The deadline interrupts only a wait for the body, never the route's own work."""
    worked: list[str] = []

    async def slow_route(request: Request) -> Response:
        chunks = request.stream()
        await anext(chunks)  # the first part of the body
        await asyncio.sleep(0.6)  # the route's own work outlasts the deadline: not interrupted
        worked.append("slept")
        async for _ in chunks:  # the rest never comes: 408 here
            pass
        return Response("read it all")

    app = Starlette(
        routes=[Route("/upload", slow_route, methods=["POST"])],
        middleware=[Middleware(Edge, body_timeout=0.3)],
        exception_handlers=EXCEPTION_HANDLERS,
    )
    answers = []
    async with serving(app) as (_, port):
        for body in (b"0123456789", b"01234"):  # complete (control), then stalled
            answer = await asyncio.wait_for(_post_raw(port, body, length=10), 30)
            answers.append(answer.split(b"\r\n", 1)[0] + b" " + answer.rsplit(b"\r\n", 1)[-1])
    assert answers[0] == b"HTTP/1.1 200 OK read it all"
    assert answers[1].startswith(b"HTTP/1.1 408 Request Timeout {")
    assert b'"code":"body_timeout"' in answers[1]
    assert worked == ["slept", "slept"]


async def _post_raw(port: int, body: bytes, length: int) -> bytes:
    """Write the first chunk of a body, then the rest after a pause; what the server answered."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = "POST /upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    writer.write(f"{head}Content-Length: {length}\r\n\r\n".encode() + body[:5])
    await writer.drain()
    await asyncio.sleep(0.1)
    writer.write(body[5:])
    await writer.drain()
    try:
        return await reader.read()
    finally:
        writer.close()


# --- failed authentication per client address ---------------------------------------------------

ATTACKER = "203.0.113.7"
CLIENT = "198.51.100.9"


def bad_signature() -> dict[str, str]:
    headers = signed_headers(API_KEY_ID, "wrong-secret-wrong-secret", "POST", SEND, MESSAGE, 0)
    return headers | {"X-Wabus-Timestamp": str(int(time.time()))}


@pytest.fixture
def guarded(settings: Settings) -> Settings:
    """Five failed authentications per address; 127.0.0.1 is the trusted proxy."""
    return settings.model_copy(
        update={
            "auth_failure_limit": 5,
            "auth_failure_window": 900.0,
            "trusted_proxies": (ip_network("127.0.0.1/32"),),
        }
    )


async def test_a_flood_of_bad_signatures_is_refused_and_other_clients_are_served(
    guarded: Settings, nc: NATS, settings: Settings
) -> None:
    async with relay(guarded) as (base, _), httpx.AsyncClient(base_url=base) as http:
        forwarded = {"X-Forwarded-For": f"192.0.2.1, {ATTACKER}"}  # the proxy appended ATTACKER

        async def attack() -> httpx.Response:
            return await http.post(SEND, content=MESSAGE, headers=bad_signature() | forwarded)

        first = [await attack() for _ in range(5)]  # positive control: refused as unsigned
        assert [(r.status_code, r.json()["code"]) for r in first] == [
            (401, "invalid_signature")
        ] * 5
        flood = await asyncio.gather(*(attack() for _ in range(FLOOD)))
        assert {r.status_code for r in flood} == {429}
        answer = flood[0]
        assert answer.headers["content-type"].startswith(PROBLEM_JSON)
        assert answer.json()["code"] == "too_many_failed_requests"
        assert int(answer.headers["retry-after"]) > 0
        assert answer.headers["x-request-id"]

        # the attacker's address is refused even when signed; another client is served
        from_attacker = await signed(base, "POST", SEND, {"to": "5511999999999", "text": "a"},
                                     headers=forwarded)  # fmt: skip
        assert (from_attacker.status_code, from_attacker.json()["code"]) == (
            429,
            "too_many_failed_requests",
        )
        other = await signed(base, "POST", SEND, {"to": "5511999999999", "text": "b"},
                             headers={"X-Forwarded-For": CLIENT})  # fmt: skip
        assert other.status_code == 202, other.text
        assert (await http.get("/healthz", headers=forwarded)).status_code == 200  # probes pass
    assert await commands_stored(nc, settings) == 1


async def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(
    guarded: Settings, nc: NATS, settings: Settings
) -> None:
    """127.0.0.2 is not a trusted proxy: a new X-Forwarded-For on each request buys nothing."""
    untrusted = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
    async with (
        relay(guarded) as (base, _),
        httpx.AsyncClient(base_url=base, transport=untrusted) as peer,
        httpx.AsyncClient(base_url=base) as proxy,
    ):

        async def attempt(client: httpx.AsyncClient, number: int) -> int:
            spoofed = {"X-Forwarded-For": f"10.9.0.{number}"}
            answer = await client.post(SEND, content=MESSAGE, headers=bad_signature() | spoofed)
            return answer.status_code

        # through the trusted proxy each forwarded address has its own allowance (control)
        assert [await attempt(proxy, n) for n in range(8)] == [401] * 8
        # from the untrusted peer they all count against 127.0.0.2
        assert [await attempt(peer, n) for n in range(8)] == [401] * 5 + [429] * 3
    assert await commands_stored(nc, settings) == 0
