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

A holder is sure of a lease for one TTL from the moment it *sent* the write that last confirmed it
(the server starts the key's TTL later than that): `holds` says so, and work that must never run on
two holders at once (a webhook request, a WhatsApp socket) starts only while it is true. Releasing
leaves a marker, so the next holder knows the work was handed back rather than abandoned.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from wabus.logs import get_logger
from wabus.natsbus import UNAVAILABLE

log = get_logger(__name__)


@dataclass(frozen=True)
class _Held:
    revision: int
    """The revision we last wrote."""
    confirmed_at: float
    """When the write of that revision was sent (our clock)."""
    handed_over: bool
    """Claimed from a holder that released it (not from one that vanished)."""


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
        self._held: dict[str, _Held] = {}

    @property
    def held(self) -> set[str]:
        return set(self._held)

    def holds(self, key: str) -> bool:
        """Surely still ours: less than a TTL since the write that last confirmed it was sent."""
        held = self._held.get(key)
        return held is not None and self._clock() - held.confirmed_at < self.ttl

    def handed_over(self, key: str) -> bool:
        """The lease was claimed from a holder that released it, so none of that holder's work on
        it can still be running (False when it expired, or was never held)."""
        held = self._held.get(key)
        return held is not None and held.handed_over

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            self._kv = await self._js.key_value(self._bucket_name)
        return self._kv

    def _value(self) -> bytes:
        return json.dumps({"holder": self.holder}).encode()

    async def acquire(self, instance: str) -> bool:
        """Claim `instance`; False while another holder has it (or NATS is away)."""
        sent_at = self._clock()
        handed_over = False
        try:
            kv = await self._bucket()
            try:
                revision = await kv.create(instance, self._value())
            except KeyWrongLastSequenceError:
                entry = await kv.get(instance)
                value = _lease_value(entry.value)
                handed_over = value.get("holder") is None and "released_by" in value
                if value.get("holder") != self.holder and not handed_over:
                    return False
                if entry.revision is None:
                    return False
                revision = await kv.update(instance, self._value(), last=entry.revision)
        except (KeyWrongLastSequenceError, KeyNotFoundError):
            return False
        except UNAVAILABLE as error:
            log.warning("lease not claimed: NATS unavailable", key=instance, error=repr(error))
            return False
        self._held[instance] = _Held(revision, sent_at, handed_over)
        log.info("lease claimed", key=instance, holder=self.holder, handed_over=handed_over)
        return True

    async def renew(self) -> list[str]:
        """Renew every lease held; the keys whose lease is lost (stop that work now)."""
        lost = []
        for instance, held in list(self._held.items()):
            sent_at = self._clock()
            try:
                kv = await self._bucket()
                new_revision = await kv.update(instance, self._value(), last=held.revision)
            except (KeyWrongLastSequenceError, KeyNotFoundError):
                lost.append(instance)
                continue
            except UNAVAILABLE:
                if not self.holds(instance):
                    lost.append(instance)
                continue
            if instance not in self._held:
                continue  # released while this renewal was on its way
            self._held[instance] = _Held(new_revision, sent_at, held.handed_over)
        for instance in lost:
            self._held.pop(instance, None)
            log.error("lease lost", key=instance, holder=self.holder)
        return lost

    async def release(self, instance: str) -> None:
        """Hand the lease back: the next holder may claim it at once, knowing it was released."""
        held = self._held.pop(instance, None)
        if held is None:
            return
        marker = json.dumps({"holder": None, "released_by": self.holder}).encode()
        try:
            kv = await self._bucket()
            revision = held.revision
            for _ in range(2):
                try:
                    await kv.update(instance, marker, last=revision)
                    return
                except KeyWrongLastSequenceError:
                    # a renewal cut off when stopping may have landed unrecorded: still ours?
                    entry = await kv.get(instance)
                    if _lease_value(entry.value).get("holder") != self.holder:
                        raise
                    revision = entry.revision or 0
            log.warning("lease not released: it kept changing; it expires by itself", key=instance)
        except (KeyWrongLastSequenceError, KeyNotFoundError):
            log.warning("lease not released: another holder has it now", key=instance)
        except UNAVAILABLE as error:
            log.warning("lease not released: it expires by itself", key=instance, error=repr(error))


def _lease_value(raw: bytes | None) -> dict[str, object]:
    """A lease entry's value; one that is not ours to read counts as held by someone else."""
    try:
        value = json.loads(raw or b"{}")
    except ValueError:
        return {"holder": "?"}
    return value if isinstance(value, dict) else {"holder": "?"}
