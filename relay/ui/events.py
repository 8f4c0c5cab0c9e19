"""Live events: a page, and a server-sent event stream fed by a core NATS subscription per
browser — bounded: when the browser reads slower than events come, events are dropped and
counted (the page shows how many), never buffered without limit."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator

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
STREAM_LIFETIME = 300.0
"""Seconds after which a stream ends (the browser reconnects by itself): no stream outlives a
relay's graceful shutdown by long."""
_EVENT_TYPE = re.compile(r"^[a-z][a-z_]*(\.[a-z_]+)*$")


def subject_of(prefix: str, instance: str, event_type: str) -> str:
    """The subject to follow; an empty filter is a wildcard."""
    return f"{prefix}.evt.{instance or '*'}.{event_type or '>'}"


def _sse(event: str, data: str) -> bytes:
    return f"event: {event}\ndata: {data}\n\n".encode()


async def _stream(
    queue: asyncio.Queue[bytes], dropped: list[int], lifetime: float
) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    ends = loop.time() + lifetime
    reported = 0
    yield b"retry: 2000\n\n"
    yield _sse("ready", "{}")
    while loop.time() < ends:
        try:
            payload = await asyncio.wait_for(queue.get(), HEARTBEAT)
        except TimeoutError:
            yield b": keep-alive\n\n"
            continue
        if dropped[0] != reported:
            reported = dropped[0]
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
        queue: asyncio.Queue[bytes] = asyncio.Queue(QUEUE_LIMIT)
        dropped = [0]

        def deliver(payload: bytes) -> None:
            try:
                queue.put_nowait(payload)
            except asyncio.QueueFull:
                dropped[0] += 1
                if dropped[0] in (1, 100) or dropped[0] % 1000 == 0:
                    log.warning("live events dropped for a slow browser", dropped=dropped[0])

        subject = subject_of(state.settings.subject_prefix, instance, event_type)
        unsubscribe = await feed.subscribe(subject, deliver)

        async def body() -> AsyncIterator[bytes]:
            try:
                async for chunk in _stream(queue, dropped, STREAM_LIFETIME):
                    yield chunk
            finally:
                with contextlib.suppress(Exception):  # the connection may be closing
                    await unsubscribe()
                log.debug("live events stream ended", subject=subject, dropped=dropped[0])

        return StreamingResponse(
            body(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    return [
        Route("/events", protected(ui, page), methods=["GET"]),
        Route("/events/stream", protected(ui, stream), methods=["GET"]),
    ]
