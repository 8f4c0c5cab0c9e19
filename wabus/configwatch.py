"""Following the instance configuration bucket: its current values first, then every change.

The connector (which sessions run) and the relay (which webhook endpoints exist) both follow it.
The watch is opened again after every NATS reconnect (its ordered consumer may not have survived
a server restart, and would only notice after several missed heartbeats) and whenever it breaks;
each fresh snapshot is reconciled: instances missing from it count as deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue
from pydantic import ValidationError

from schemas.ids import is_instance_id
from schemas.instances import InstanceConfig
from schemas.subjects import Topology
from wabus.logs import get_logger
from wabus.natsbus import UNAVAILABLE

log = get_logger(__name__)

Apply = Callable[[str, InstanceConfig | None, int | None], Awaitable[None]]
"""(instance, its config or None when deleted, the entry's revision)."""


class ConfigWatch:
    def __init__(
        self,
        apply: Apply,
        known: Callable[[], set[str]],
        on_error: Callable[[str], None] = lambda kind: None,
    ) -> None:
        self._apply = apply
        self._known = known
        """The instances the follower holds now: those missing from a snapshot are deleted."""
        self._on_error = on_error
        self.loaded = asyncio.Event()
        """Set once the first snapshot was applied."""

    async def run(
        self,
        js: JetStreamContext,
        topology: Topology,
        stop: asyncio.Event,
        reconnects: Callable[[], int] = lambda: 0,
    ) -> None:
        """Follow the bucket until `stop`."""
        while not stop.is_set():
            try:
                kv = await js.key_value(topology.config_bucket)
                await self._follow(kv, stop, reconnects)
            except Exception as error:
                self._on_error("config_watch")
                log.warning("config watch broke, reopening", error=repr(error))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
        log.info("config watch stopped")

    async def _follow(
        self, kv: KeyValue, stop: asyncio.Event, reconnects: Callable[[], int]
    ) -> None:
        opened_at = reconnects()
        watcher = await kv.watchall()
        snapshot: set[str] | None = set()
        try:
            while not stop.is_set():
                if reconnects() != opened_at:
                    log.info("NATS reconnected: reopening the config watch")
                    return
                try:
                    entry = await watcher.updates(timeout=0.25)  # type: ignore[no-untyped-call]
                except NatsTimeoutError:
                    continue
                if entry is None:  # end of the initial values
                    if snapshot is not None:
                        for gone in self._known() - snapshot:
                            await self._apply(gone, None, None)
                        snapshot = None
                        self.loaded.set()
                    continue
                instance = entry.key
                if not is_instance_id(instance):
                    log.error("config key is not an instance id, ignored", key=instance)
                    continue
                if snapshot is not None:
                    snapshot.add(instance)
                if entry.operation in (KV_DEL, KV_PURGE) or not entry.value:
                    await self._apply(instance, None, None)
                    continue
                try:
                    config = InstanceConfig.model_validate_json(entry.value)
                except ValidationError as error:
                    self._on_error("invalid_config")
                    log.error(
                        "invalid instance config ignored", instance=instance, error=str(error)
                    )
                    continue
                await self._apply(instance, config, entry.revision)
        finally:
            try:
                await watcher.stop()  # type: ignore[no-untyped-call]
            except UNAVAILABLE as error:  # the watch ends with the connection anyway
                log.info("config watcher not stopped cleanly", error=repr(error))
