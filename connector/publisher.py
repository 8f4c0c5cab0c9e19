"""Publishes engine events to `WA_EVENTS`, each with `Nats-Msg-Id` = its envelope id."""

from __future__ import annotations

import asyncio

from nats.errors import ConnectionClosedError, NoRespondersError, TimeoutError
from nats.js import JetStreamContext
from nats.js.errors import ServiceUnavailableError

from connector.metrics import EVENTS_PUBLISHED, PUBLISH_RETRIES
from schemas.envelope import EventData, EventEnvelope, encode, make_event
from schemas.subjects import Topology
from wabus.logs import get_logger

log = get_logger(__name__)

RETRYABLE = (TimeoutError, NoRespondersError, ServiceUnavailableError, ConnectionClosedError)


class EventPublisher:
    """Wraps event data in envelopes and publishes them, retrying until JetStream acks.

    The retry reuses the same `Nats-Msg-Id`, so a publish whose ack was lost is stored once.
    """

    def __init__(self, js: JetStreamContext, topology: Topology, max_backoff: float = 5.0) -> None:
        self._js = js
        self._topology = topology
        self._max_backoff = max_backoff

    async def emit(self, instance: str, data: EventData, source_id: str | None = None) -> None:
        await self.publish(make_event(instance, data, source_id=source_id))

    async def publish(self, envelope: EventEnvelope) -> None:
        subject = self._topology.event(envelope.instance, envelope.type)
        body = encode(envelope)
        headers = {"Nats-Msg-Id": envelope.id}
        delay = 0.05
        while True:
            try:
                await self._js.publish(subject, body, headers=headers, timeout=2.0)
            except RETRYABLE as error:
                PUBLISH_RETRIES.inc()
                log.warning(
                    "event publish failed, retrying",
                    instance=envelope.instance,
                    event_id=envelope.id,
                    error=type(error).__name__,
                    retry_in=delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_backoff)
                continue
            EVENTS_PUBLISHED.labels(envelope.type).inc()
            return
