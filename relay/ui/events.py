"""Live events: a page, and a server-sent event stream fed by a core NATS subscription per
browser — bounded: when the browser reads slower than events come, events are dropped and
counted (the page shows how many), never buffered without limit."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncGenerator, AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from relay.state import relay_state
from relay.ui.calls import Failed
from relay.ui.web import Ui, protected
from schemas.ids import is_instance_id
from wabus.logs import get_logger

log = get_logger(__name__)

QUEUE_LIMIT = 256
"""Events held for one browser; past it, new ones are dropped (and counted)."""
HEARTBEAT = 15.0
"""Seconds between comment lines that keep proxies from closing an idle stream."""
STREAM_LIFETIME = 60.0
"""Seconds after which a stream ends (the browser reconnects within a second): uvicorn's
graceful shutdown waits for open responses, and nothing tells a stream the relay is stopping,
so this bounds how long an open live events page can hold a relay's shutdown up."""
_EVENT_TYPE = re.compile(r"^[a-z][a-z_]*(\.[a-z_]+)*$")


def subject_of(prefix: str, instance: str, event_type: str) -> str:
    """The subject to follow; an empty filter is a wildcard."""
    return f"{prefix}.evt.{instance or '*'}.{event_type or '>'}"


def _sse(event: str, data: str) -> bytes:
    return f"event: {event}\ndata: {data}\n\n".encode()


class Follower:
    """One browser's share of the live events: a bounded queue the NATS callback fills without
    ever waiting, and the stream the browser reads from it."""

    def __init__(self, limit: int = QUEUE_LIMIT) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(limit)
        self.dropped = 0

    def deliver(self, payload: bytes) -> None:
        """The subscription's callback: queue the event, or drop and count it when full."""
        try:
            self.queue.put_nowait(payload)
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped in (1, 100) or self.dropped % 1000 == 0:
                log.warning("live events dropped for a slow browser", dropped=self.dropped)

    async def stream(
        self, lifetime: float = STREAM_LIFETIME, heartbeat: float = HEARTBEAT
    ) -> AsyncGenerator[bytes, None]:
        """Server-sent events: `ready`, then each `envelope` (preceded by a `dropped` count
        whenever it grew), comment lines while idle; it ends after `lifetime` seconds."""
        loop = asyncio.get_running_loop()
        ends = loop.time() + lifetime
        reported = 0
        yield b"retry: 1000\n\n"
        yield _sse("ready", "{}")
        while loop.time() < ends:
            try:
                payload = await asyncio.wait_for(self.queue.get(), heartbeat)
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            if self.dropped != reported:
                reported = self.dropped
                yield _sse("dropped", json.dumps({"dropped": reported}))
            yield _sse("envelope", payload.decode("utf-8", "replace").replace("\n", " "))


def routes(ui: Ui) -> list[Route]:
    async def page(request: Request) -> Response:
        return ui.page(
            request,
            "events.html",
            instance=request.query_params.get("instance", ""),
            event_type=request.query_params.get("type", ""),
        )

    async def stream(request: Request) -> Response:
        instance = request.query_params.get("instance", "")
        event_type = request.query_params.get("type", "")
        if instance and not is_instance_id(instance):
            failed = Failed(422, "invalid_filter", "instance ids match ^[a-z0-9][a-z0-9_-]{0,62}$")
            return ui.failed(request, failed, "/ui/events")
        if event_type and not _EVENT_TYPE.fullmatch(event_type):
            failed = Failed(422, "invalid_filter", "an event type is like `message.received`")
            return ui.failed(request, failed, "/ui/events")
        state = relay_state(request)
        feed = state.stores.feed
        if feed is None:
            failed = Failed(503, "live_events_unavailable", "this relay follows no event bus")
            return ui.failed(request, failed, "/ui/events")
        follower = Follower()
        subject = subject_of(state.settings.subject_prefix, instance, event_type)
        unsubscribe = await feed.subscribe(subject, follower.deliver)

        async def body() -> AsyncIterator[bytes]:
            try:
                async for chunk in follower.stream():
                    yield chunk
            finally:
                try:
                    await unsubscribe()
                except Exception as error:  # the connection may be closing or gone
                    log.info("live events unsubscribe failed", error=repr(error))
                log.debug("live events stream ended", subject=subject, dropped=follower.dropped)

        return StreamingResponse(
            body(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    return [
        Route("/events", protected(ui, page), methods=["GET"]),
        Route("/events/stream", protected(ui, stream), methods=["GET"]),
    ]
