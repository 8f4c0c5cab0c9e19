"""Deadlines for reading a request, which uvicorn does not have on its own.

A client must send a request's head within `header_timeout` seconds of opening the connection
(or of the request's first byte on a kept-alive connection), and its body within `body_timeout`
seconds of the head; otherwise the connection is closed, with a 408 problem when no answer is
under way on it.

Why here: uvicorn's only read timer is keep-alive *between* requests, and every byte received
resets it, so a client sending one header byte a second holds a connection, its buffers and a
file descriptor for ever (slowloris). An ASGI middleware cannot help with heads: the app sees a
request only once its head is parsed. The relay's own middleware answers a slow body with a 408
`body_timeout` problem; the body deadline here is the backstop for routes that never read their
body, and fires a moment later so that the problem answer wins. Why not another server:
docs/deploy.md ("Slow clients, guessers and the proxy in front"), measured with
bench/slow_clients.py.
"""

from __future__ import annotations

import asyncio
import json
import time
import weakref
from typing import Any, Literal, Protocol

from prometheus_client import Counter
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from wabus.logs import get_logger

log = get_logger(__name__)

DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_BODY_TIMEOUT = 60.0
BACKSTOP_GRACE = 1.0
"""Seconds the body backstop waits past `body_timeout`, so the app's 408 answer goes first."""
MIN_TICK = 0.01
"""Seconds: the finest a deadline is checked (a quarter of the shortest deadline, at most 1 s)."""
SUMMARY_EVERY = 10.0
"""Seconds between two log lines about closed slow connections (one line per flood, not per
connection)."""

Phase = Literal["header", "body"]
CLOSED = Counter(
    "wabus_http_slow_connections_closed_total",
    "Connections closed because the request's head or body did not arrive in time",
    ["phase"],
)


def _timeout_answer() -> bytes:
    body = json.dumps(
        {
            "type": "https://wabus.dev/problems/header_timeout",
            "title": "Request Timeout",
            "status": 408,
            "code": "header_timeout",
            "detail": "the request's head did not arrive in time; the connection is closed",
        }
    ).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\n"
        "content-type: application/problem+json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode() + body


TIMEOUT_ANSWER = _timeout_answer()


class _Summary:
    """Counts closed connections and logs at most one line per `SUMMARY_EVERY` seconds."""

    def __init__(self) -> None:
        self.unlogged = 0
        self.logged_at = float("-inf")

    def closed(self, phase: Phase, client: tuple[str, int] | None, timeout: float) -> None:
        CLOSED.labels(phase).inc()
        self.unlogged += 1
        now = time.monotonic()
        if now - self.logged_at >= SUMMARY_EVERY:
            log.warning(
                "slow connections closed",
                phase=phase,
                timeout=timeout,
                closed=self.unlogged,
                last_client=client[0] if client else None,
            )
            self.unlogged, self.logged_at = 0, now


_summary = _Summary()


class Expiring(Protocol):
    """What a sweep tells that its deadline passed (a `DeadlineProtocol`)."""

    def expired(self, phase: Phase, seconds: float) -> None: ...


class _Sweeper:
    """The head and body deadlines of every connection on one event loop, and one timer that
    checks them a few times a second while any is set.

    Why not a timer per deadline: each request armed two and cancelled two (head, then body);
    setting a deadline here is a dict write (a raw `202` behind this protocol: 36-39 µs of
    server CPU per request, 38.6-40.2 with the timers; plain uvicorn 32.6). A
    deadline fires up to one tick late, which for deadlines of seconds is "a moment later"."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.tick = 1.0
        self.deadlines: dict[Expiring, tuple[float, Phase, float]] = {}
        self._timer: asyncio.TimerHandle | None = None

    def set(self, connection: Expiring, phase: Phase, seconds: float) -> None:
        self.deadlines[connection] = (self.loop.time() + seconds, phase, seconds)
        if seconds / 4 < self.tick:
            self.tick = max(seconds / 4, MIN_TICK)
        if self._timer is None:
            self._timer = self.loop.call_later(self.tick, self._sweep)

    def clear(self, connection: Expiring) -> None:
        self.deadlines.pop(connection, None)

    def _sweep(self) -> None:
        self._timer = None
        now = self.loop.time()
        late = [
            (connection, phase, seconds)
            for connection, (deadline, phase, seconds) in self.deadlines.items()
            if deadline <= now
        ]
        for connection, phase, seconds in late:
            del self.deadlines[connection]
            connection.expired(phase, seconds)
        if self.deadlines:
            self._timer = self.loop.call_later(self.tick, self._sweep)


_sweepers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Sweeper] = (
    weakref.WeakKeyDictionary()
)


def _sweeper_of(loop: asyncio.AbstractEventLoop) -> _Sweeper:
    sweeper = _sweepers.get(loop)
    if sweeper is None:
        sweeper = _sweepers[loop] = _Sweeper(loop)
    return sweeper


class DeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a head deadline and a body backstop (0 disables one)."""

    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    body_timeout: float = DEFAULT_BODY_TIMEOUT

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sweeper = _sweeper_of(self.loop)
        self._waiting_for_head = False

    def _arm(self, phase: Phase, seconds: float) -> None:
        self._waiting_for_head = phase == "header"
        if seconds > 0:
            self._sweeper.set(self, phase, seconds)
        else:
            self._sweeper.clear(self)

    def _disarm(self) -> None:
        self._waiting_for_head = False
        self._sweeper.clear(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._arm("header", self.header_timeout)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._waiting_for_head:  # the next request on a kept-alive connection
            self._arm("header", self.header_timeout)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._arm("body", self.body_timeout + BACKSTOP_GRACE if self.body_timeout > 0 else 0)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def expired(self, phase: Phase, seconds: float) -> None:
        """The head or body did not arrive in time: close, with a 408 when nothing is being
        answered on the connection."""
        self._waiting_for_head = False
        if self.transport.is_closing():
            return
        answering = self.cycle is not None and not self.cycle.response_complete
        if phase == "header" and not answering:
            self.transport.write(TIMEOUT_ANSWER)
        _summary.closed(phase, self.client, seconds)
        self.transport.close()


def deadline_protocol(header_timeout: float, body_timeout: float) -> type[DeadlineProtocol]:
    """The protocol class for one server's timeouts (uvicorn builds one instance per
    connection from a class, so the values ride on a subclass)."""
    return type(
        "DeadlineProtocol",
        (DeadlineProtocol,),
        {"header_timeout": header_timeout, "body_timeout": body_timeout},
    )
