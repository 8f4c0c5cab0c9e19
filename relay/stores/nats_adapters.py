"""The relay's ports on NATS: KV buckets, the commands stream, the object store.

Only transport lives here; what a value means and which answer a route gives stay in the routes.
"""

from __future__ import annotations

from collections.abc import Callable

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import MaxPayloadError
from nats.js import JetStreamContext
from nats.js.errors import (
    BucketNotFoundError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NotFoundError,
    ObjectNotFoundError,
)
from nats.js.kv import KeyValue

from relay.delivery.service import Deliveries
from relay.jetstream import Acks
from relay.replay import NatsReplayGuard
from relay.stores.ports import (
    BusHealth,
    CommandBus,
    DeliveryControl,
    InstanceStore,
    Media,
    MediaStore,
    PayloadTooLarge,
    Records,
    ReplayGuard,
    RevisionConflict,
    Stored,
    Unsubscribe,
)
from relay.waits import wait_for_value
from wabus.natsbus import streams_present
from wabus.settings import Settings


async def _get(kv: KeyValue, key: str) -> Stored | None:
    try:
        entry = await kv.get(key)
    except KeyNotFoundError:  # also raised for a deleted key
        return None
    if not entry.value:
        return None
    return Stored(key, entry.value, entry.revision or 0)


async def _snapshot(kv: KeyValue, *, meta_only: bool) -> list[Stored]:
    """Every current key of `kv` (deleted ones left out), read by a watch that ends at the
    snapshot's last entry; `value` is empty with `meta_only`."""
    watcher = await kv.watchall(ignore_deletes=True, meta_only=meta_only)
    found: list[Stored] = []
    try:
        async for entry in watcher:
            if entry is None:  # the bucket is empty
                break
            found.append(Stored(entry.key, entry.value or b"", entry.revision or 0))
            if entry.delta == 0:
                break
    finally:
        await watcher.stop()  # type: ignore[no-untyped-call]
    return found


class NatsInstanceStore:
    """Instance configurations in the configuration bucket."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    async def get(self, instance: str) -> Stored | None:
        return await _get(self._kv, instance)

    async def entries(self) -> list[Stored]:
        return [entry for entry in await _snapshot(self._kv, meta_only=False) if entry.value]

    async def revisions(self) -> dict[str, int]:
        return {entry.key: entry.revision for entry in await _snapshot(self._kv, meta_only=True)}

    async def create(self, instance: str, value: bytes) -> int:
        try:
            return await self._kv.create(instance, value)
        except KeyWrongLastSequenceError as error:
            raise RevisionConflict(instance) from error

    async def update(self, instance: str, value: bytes, revision: int) -> int:
        try:
            return await self._kv.update(instance, value, last=revision)
        except KeyWrongLastSequenceError as error:
            raise RevisionConflict(instance) from error

    async def delete(self, instance: str, revision: int) -> None:
        try:
            await self._kv.delete(instance, last=revision)
        except KeyWrongLastSequenceError as error:
            raise RevisionConflict(instance) from error


class NatsRecords:
    """A bucket the connector writes (status, send records), read and watched."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    async def get(self, key: str) -> bytes | None:
        found = await _get(self._kv, key)
        return None if found is None else found.value

    async def wait(self, key: str, done: Callable[[bytes], bool], seconds: float) -> bytes | None:
        return await wait_for_value(self._kv, key, done, seconds)


class NatsCommandBus:
    """`WA_COMMANDS`: one acked publish per command, its id as `Nats-Msg-Id`."""

    def __init__(self, nc: NATS, acks: Acks) -> None:
        self._nc = nc
        self._acks = acks

    @property
    def max_payload(self) -> int:
        return self._nc.max_payload

    async def publish(self, subject: str, payload: bytes, message_id: str) -> bool:
        try:
            _, duplicate = await self._acks.publish(subject, payload, {"Nats-Msg-Id": message_id})
        except MaxPayloadError as error:
            raise PayloadTooLarge(str(error)) from error
        return duplicate


class NatsMediaStore:
    """The media object store (name = media id, description = mimetype), bound on each read:
    the connector may create it after the relay started."""

    def __init__(self, js: JetStreamContext, store: str) -> None:
        self._js = js
        self._store = store

    async def get(self, media_id: str) -> Media | None:
        try:
            store = await self._js.object_store(self._store)
            result = await store.get(media_id)
        except (BucketNotFoundError, ObjectNotFoundError, NotFoundError):
            return None
        return Media(result.data or b"", result.info.description or "")


class NatsEventFeed:
    """`EventFeed` on the relay's connection: one core subscription per follower."""

    def __init__(self, nc: NATS) -> None:
        self._nc = nc

    async def subscribe(self, subject: str, deliver: Callable[[bytes], None]) -> Unsubscribe:
        async def on_message(message: Msg) -> None:
            deliver(message.data)

        subscription = await self._nc.subscribe(subject, cb=on_message)
        return subscription.unsubscribe


class NatsHealth:
    """What `/readyz` checks on NATS: the connection, and the streams."""

    def __init__(self, nc: NATS, js: JetStreamContext, settings: Settings) -> None:
        self._nc = nc
        self._js = js
        self._settings = settings

    async def checks(self) -> dict[str, bool]:
        connected = self._nc.is_connected
        return {
            "nats": connected,
            "streams": connected and await streams_present(self._js, self._settings),
        }


def _conformance(
    nc: NATS, js: JetStreamContext, kv: KeyValue, settings: Settings, deliveries: Deliveries
) -> None:
    """Never called: mypy checks here that each adapter is its port."""
    _instances: InstanceStore = NatsInstanceStore(kv)
    _records: Records = NatsRecords(kv)
    _commands: CommandBus = NatsCommandBus(nc, Acks(nc))
    _replay: ReplayGuard = NatsReplayGuard(Acks(nc), "bucket")
    _media: MediaStore = NatsMediaStore(js, "store")
    _health: BusHealth = NatsHealth(nc, js, settings)
    _deliveries: DeliveryControl = deliveries
