"""Leases: which process holds which piece of work — which connector holds which instance, so that
two connectors never open the same WhatsApp device (two sockets for one device replace each other,
`stream_replaced`), and which relay delivers to which webhook endpoint, so that one endpoint's
events go out in order.

A leases bucket has a TTL equal to the lease time and one history entry per key, so every write
restarts a key's age and a lease nobody renews disappears. A holder *creates* the key to claim
it (creation fails while another holds it) and renews it with a compare-and-set update on the
revision it last wrote. A renewal that fails — someone else holds the key now, or NATS has not
answered for a whole lease time — means the lease is lost, and the caller stops that work at
once. A restarted holder with the same id takes its own leases back without waiting for them to
expire.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from wabus.logs import get_logger
from wabus.natsbus import UNAVAILABLE

log = get_logger(__name__)


class Leases:
    def __init__(
        self,
        js: JetStreamContext,
        bucket: str,
        holder: str,
        ttl: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._js = js
        self._bucket_name = bucket
        self.holder = holder
        self.ttl = ttl
        self._clock = clock
        self._kv: KeyValue | None = None
        self._held: dict[str, tuple[int, float]] = {}
        """Key → (revision we last wrote, when it was written)."""

    @property
    def held(self) -> set[str]:
        return set(self._held)

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            self._kv = await self._js.key_value(self._bucket_name)
        return self._kv

    def _value(self) -> bytes:
        return json.dumps({"holder": self.holder}).encode()

    async def acquire(self, instance: str) -> bool:
        """Claim `instance`; False while another holder has it (or NATS is away)."""
        try:
            kv = await self._bucket()
            try:
                revision = await kv.create(instance, self._value())
            except KeyWrongLastSequenceError:
                entry = await kv.get(instance)
                holder = json.loads(entry.value or b"{}").get("holder")
                if holder != self.holder or entry.revision is None:
                    return False
                revision = await kv.update(instance, self._value(), last=entry.revision)
        except (KeyWrongLastSequenceError, KeyNotFoundError):
            return False
        except UNAVAILABLE as error:
            log.warning("lease not claimed: NATS unavailable", key=instance, error=repr(error))
            return False
        self._held[instance] = (revision, self._clock())
        log.info("lease claimed", key=instance, holder=self.holder)
        return True

    async def renew(self) -> list[str]:
        """Renew every lease held; the keys whose lease is lost (stop that work now)."""
        lost = []
        for instance, (revision, renewed_at) in list(self._held.items()):
            try:
                kv = await self._bucket()
                new_revision = await kv.update(instance, self._value(), last=revision)
            except (KeyWrongLastSequenceError, KeyNotFoundError):
                lost.append(instance)
                continue
            except UNAVAILABLE:
                if self._clock() - renewed_at >= self.ttl:
                    lost.append(instance)
                continue
            self._held[instance] = (new_revision, self._clock())
        for instance in lost:
            self._held.pop(instance, None)
            log.error("lease lost", key=instance, holder=self.holder)
        return lost

    async def release(self, instance: str) -> None:
        held = self._held.pop(instance, None)
        if held is None:
            return
        try:
            kv = await self._bucket()
            await kv.delete(instance, last=held[0])
        except Exception as error:  # it expires anyway
            log.warning("lease not released", key=instance, error=repr(error))
