"""How many HTTP requests an event has had at an endpoint, kept in NATS while it is being retried.

JetStream's redelivery count is not that number: a lease handed back, a 410 re-queue or a relay
restart redeliver an event that was never sent again. The count here grows only when a request
was really made and failed, so the retry delay, the dead-letter decision and the delivery log's
`attempt` follow the requests the endpoint saw. An event delivered on its first try costs nothing:
a message JetStream delivers for the first time has no earlier attempt, and is not looked up.

Key: `<consumer>.<stream sequence>`; the bucket's TTL is the events stream's age (an event older
than that is gone from the stream anyway).
"""

from __future__ import annotations

from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from wabus.logs import get_logger

log = get_logger(__name__)


class AttemptCounts:
    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    async def made(self, consumer: str, seq: int, times_delivered: int) -> int:
        """Requests already made for this event at this endpoint (0 on a first delivery)."""
        if times_delivered <= 1:
            return 0
        try:
            entry = await self._kv.get(_key(consumer, seq))
        except KeyNotFoundError:
            return 0
        try:
            return int(entry.value or b"0")
        except ValueError:
            log.warning("unreadable attempt count: counting from 0", key=_key(consumer, seq))
            return 0

    async def failed(self, consumer: str, seq: int, made: int) -> None:
        """`made` requests have now been made, the last one failed."""
        await self._kv.put(_key(consumer, seq), str(made).encode())

    async def settled(self, consumer: str, seq: int) -> None:
        """Delivered or dead-lettered after earlier failures: the count is no longer needed."""
        try:
            await self._kv.purge(_key(consumer, seq))
        except KeyNotFoundError:
            return


def _key(consumer: str, seq: int) -> str:
    return f"{consumer}.{seq}"
