"""Test helpers that are real parts: HTTP servers on free ports and a webhook receiver."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from standardwebhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from wabus.embedded import free_port
from wabus.serve import serve_app


@contextlib.asynccontextmanager
async def running(
    app: ASGIApp, port: int | None = None, **serve_options: float
) -> AsyncIterator[str]:
    """Serve `app` on a real loopback port for the duration of the block; yields its base URL.
    `serve_options` go to `serve_app` (its head and body deadlines)."""
    port = port or free_port()
    stop = asyncio.Event()
    task = asyncio.create_task(serve_app(app, "127.0.0.1", port, stop, **serve_options))
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        if task.done():
            task.result()
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.02)
            continue
        writer.close()
        break
    try:
        yield url
    finally:
        stop.set()
        await task


BODILESS = frozenset({204, 304})
"""Statuses whose answer ends with its headers (RFC 9110 15.3.5, 15.4.5). A body sent with one
makes uvicorn raise "Response content longer than Content-Length" after the headers are out and
close the connection, so the client's next request on that kept-alive connection meets EOF."""


@dataclass
class Receiver:
    """A webhook endpoint that verifies with the official `standardwebhooks` library.

    `respond` decides the status of each delivery (for failure scenarios); every verified delivery
    is recorded, every unverifiable one too (`rejected`).
    """

    secret: str
    respond: Callable[[dict[str, Any]], int] = lambda event: 200
    answer: Callable[[dict[str, Any]], dict[str, Any]] = lambda event: {}
    """The JSON body of the answer; none is sent with a status that has no body (204, 304)."""
    headers: Callable[[dict[str, Any]], dict[str, str]] = lambda event: {}
    """Extra response headers (`Retry-After`, …)."""
    delay: Callable[[dict[str, Any]], float] = lambda event: 0.0
    """Seconds to wait before answering (a slow endpoint)."""
    hold: Callable[[dict[str, Any]], asyncio.Event | None] = lambda event: None
    """An event to wait for before answering (a hanging endpoint, released by the test)."""
    deliveries: list[tuple[dict[str, str], dict[str, Any]]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    """When each delivery arrived (monotonic), beside `deliveries`."""
    paths: list[str] = field(default_factory=list)
    """The path each delivery was posted to (`/hook`, `/hook/<name>`), beside `deliveries`."""
    rejected: list[str] = field(default_factory=list)
    answered: list[str] = field(default_factory=list)
    """Event ids in the order their answers were sent."""
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> Starlette:
        verifier = Webhook(self.secret)

        async def receive(request: Request) -> Response:
            body = await request.body()
            headers = dict(request.headers)
            try:
                event = verifier.verify(body, headers)
            except Exception as error:
                self.rejected.append(str(error))
                return Response(status_code=400)
            self.deliveries.append((headers, event))
            self.times.append(time.monotonic())
            self.paths.append(request.url.path)
            self.arrived.set()
            if pause := self.delay(event):
                await asyncio.sleep(pause)
            if gate := self.hold(event):
                await gate.wait()
            status = self.respond(event)
            self.answered.append(str(event.get("id", "")))
            if status in BODILESS:
                return Response(status_code=status, headers=self.headers(event))
            return Response(
                json.dumps(self.answer(event)),
                status_code=status,
                headers=self.headers(event),
                media_type="application/json",
            )

        return Starlette(
            routes=[
                Route("/hook", receive, methods=["POST"]),
                Route("/hook/{name}", receive, methods=["POST"]),
            ]
        )

    def events(self, event_type: str | None = None) -> list[dict[str, Any]]:
        return [e for _, e in self.deliveries if event_type is None or e["type"] == event_type]

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0
    ) -> dict[str, Any]:
        async def poll() -> dict[str, Any]:
            while True:
                self.arrived.clear()
                for _, event in self.deliveries:
                    if predicate(event):
                        return event
                await self.arrived.wait()

        return await asyncio.wait_for(poll(), timeout)


async def stored_envelopes(js: Any, stream: str) -> list[dict[str, Any]]:
    """Every message currently in `stream`, parsed, in stream order."""
    info = await js.stream_info(stream)
    envelopes = []
    for sequence in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            message = await js.get_msg(stream, sequence)
        except Exception:  # noqa: S112 - a deleted sequence in a work-queue stream
            continue
        envelopes.append(json.loads(message.data))
    return envelopes


async def eventually(
    check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05
) -> Any:
    """Poll an async `check` until it returns something truthy; its last value on success."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last: {result!r})")
        await asyncio.sleep(interval)
