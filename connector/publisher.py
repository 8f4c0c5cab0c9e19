"""Publishes events to `WA_EVENTS` with `Nats-Msg-Id` = envelope id, spooling while NATS is away.

Order is kept per connector: once anything is spooled, new events queue behind it until the
spool has drained, and one lock serialises publishing. A publish whose ack was lost and that is
published again from the spool carries the same `Nats-Msg-Id`, so JetStream stores it once.
Inbound media goes to the object store before its event, so a receiver never sees an event whose
media is missing.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable

from nats.errors import BadHeaderError, BadSubjectError, MaxPayloadError
from nats.js import JetStreamContext
from nats.js.api import ObjectMeta
from nats.js.errors import BadRequestError

from connector.metrics import ERRORS, EVENTS_PUBLISHED, SPOOL_DEPTH, SPOOLED
from connector.spool import Outgoing, Spool, SpoolFull
from connector.waiting import first_event
from schemas.envelope import EventData, EventEnvelope, encode, make_event
from schemas.events import Media, MessageReceived
from schemas.subjects import Topology
from wabus.logs import get_logger
from wabus.natsbus import UNAVAILABLE

log = get_logger(__name__)

REJECTED = (BadRequestError, MaxPayloadError, BadSubjectError, BadHeaderError)
"""NATS refused the message itself: publishing it again cannot succeed."""

LOUD_EVERY = 1000
DEFAULT_MIME = "application/octet-stream"


def media_id(content: bytes) -> tuple[str, str]:
    """(media id, sha256 hex): the id is content-addressed, so a re-download is the same object."""
    digest = hashlib.sha256(content).hexdigest()
    return "med_" + digest[:32], digest


def with_media(data: EventData, content: bytes) -> tuple[EventData, str, str]:
    """`data` with its media id, size and sha256 filled in; also (object name, mimetype)."""
    name, digest = media_id(content)
    current = data.media if isinstance(data, MessageReceived) else None
    mimetype = (current.mimetype if current else None) or DEFAULT_MIME
    media = (current or Media()).model_copy(
        update={"id": name, "mimetype": mimetype, "size": len(content), "sha256": digest}
    )
    if isinstance(data, MessageReceived):
        data = data.model_copy(update={"media": media})
    return data, name, mimetype


class EventPublisher:
    def __init__(
        self,
        js: JetStreamContext,
        topology: Topology,
        spool: Spool,
        connected: Callable[[], bool],
        publish_timeout: float = 2.0,
    ) -> None:
        self._js = js
        self._topology = topology
        self._spool = spool
        self._connected = connected
        self._timeout = publish_timeout
        self._lock = asyncio.Lock()
        self._spooled = asyncio.Event()
        SPOOL_DEPTH.set(len(spool))
        if len(spool):
            log.warning("events left in the spool by an earlier run", depth=len(spool))
            self._spooled.set()

    @property
    def spool_depth(self) -> int:
        return len(self._spool)

    async def emit(
        self,
        instance: str,
        data: EventData,
        source_id: str | None = None,
        media: bytes | None = None,
    ) -> None:
        """Publish an event of `instance` (storing `media` first); never raises for NATS."""
        media_name = media_type = None
        if media is not None:
            data, media_name, media_type = with_media(data, media)
        envelope = make_event(instance, data, source_id=source_id)
        await self.publish(envelope, media_name, media_type, media)

    async def publish(
        self,
        envelope: EventEnvelope,
        media_name: str | None = None,
        media_type: str | None = None,
        media: bytes | None = None,
    ) -> None:
        item = Outgoing(
            subject=self._topology.event(envelope.instance, envelope.type),
            msg_id=envelope.id,
            body=encode(envelope),
            media_name=media_name,
            media_type=media_type,
            media=media,
        )
        while True:
            async with self._lock:
                if not len(self._spool) and self._connected():
                    try:
                        await self._send(item)
                        return
                    except REJECTED:
                        ERRORS.labels("publish_rejected").inc()
                        log.exception("event rejected by NATS, dropped", event_id=item.msg_id)
                        return
                    except UNAVAILABLE as error:
                        log.warning("event publish failed, spooling", error=type(error).__name__)
                try:
                    self._append(item)
                    return
                except SpoolFull as error:
                    ERRORS.labels("spool_full").inc()
                    log.error("spool full: inbound events wait in memory", error=str(error))
            # Full: hold this event (and its sender) until the drain makes room.
            await asyncio.sleep(0.5)

    def _append(self, item: Outgoing) -> None:
        depth = self._spool.append(item)
        SPOOLED.inc()
        SPOOL_DEPTH.set(depth)
        self._spooled.set()
        if depth == 1 or depth % LOUD_EVERY == 0:
            log.warning(
                "NATS unreachable: events are spooled on disk",
                depth=depth,
                limit=self._spool.max_events,
                spool=self._spool.path.name,
            )

    async def _send(self, item: Outgoing) -> None:
        if item.media is not None and item.media_name:
            store = await self._js.object_store(self._topology.media_store)
            meta = ObjectMeta(name=item.media_name, description=item.media_type)
            await asyncio.wait_for(store.put(item.media_name, item.media, meta=meta), 30)
        await self._js.publish(
            item.subject, item.body, headers={"Nats-Msg-Id": item.msg_id}, timeout=self._timeout
        )
        EVENTS_PUBLISHED.labels(item.subject.split(".", 3)[3]).inc()

    async def drain(self, stop: asyncio.Event) -> None:
        """Publish spooled events in order whenever NATS is reachable, until `stop`."""
        while not stop.is_set():
            if not len(self._spool):
                self._spooled.clear()
                await first_event(self._spooled, stop, within=1.0)
                continue
            if not self._connected() or not await self._drain_batch():
                await first_event(stop, within=0.25)
        log.info("spool drain stopped", depth=len(self._spool))

    async def flush(self, within: float) -> int:
        """Publish what the spool holds, for at most `within` seconds, as a stopping connector
        does once its sessions are closed; returns how many events it keeps for the next start
        (NATS is away, or the time ran out). Cut short, a publish is sent again from the spool
        with the same `Nats-Msg-Id`, so JetStream stores it once."""
        try:
            async with asyncio.timeout(within):
                while len(self._spool) and self._connected() and await self._drain_batch():
                    pass
        except TimeoutError:
            log.warning("spool not emptied before stopping", depth=len(self._spool))
        return len(self._spool)

    async def _drain_batch(self) -> bool:
        """Publish up to one batch from the head; False when NATS failed again."""
        async with self._lock:
            for seq, item in self._spool.head(256):
                try:
                    await self._send(item)
                except REJECTED:
                    ERRORS.labels("publish_rejected").inc()
                    log.exception("spooled event rejected by NATS, dropped", event_id=item.msg_id)
                except UNAVAILABLE:
                    return False
                self._spool.remove(seq)
                SPOOL_DEPTH.set(len(self._spool))
            if not len(self._spool):
                log.info("spool drained")
        return True
