"""The status bucket: the connector's latest word on each instance (state, reason, QR).

Writes go out at once while NATS is up; when a write fails, the board keeps the latest status
and a background task writes it when NATS is back (status is a snapshot, so only the last one
matters).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from connector.waiting import first_event
from schemas.instances import InstanceStatus
from schemas.subjects import Topology
from wabus.logs import get_logger
from wabus.natsbus import UNAVAILABLE

log = get_logger(__name__)


class StatusBoard:
    def __init__(
        self, js: JetStreamContext, topology: Topology, connected: Callable[[], bool]
    ) -> None:
        self._js = js
        self._topology = topology
        self._connected = connected
        self._kv: KeyValue | None = None
        self._latest: dict[str, InstanceStatus | None] = {}
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()

    def get(self, instance: str) -> InstanceStatus | None:
        return self._latest.get(instance)

    async def put(self, status: InstanceStatus) -> None:
        self._latest[status.instance] = status
        await self._write(status.instance)

    async def forget(self, instance: str) -> None:
        """The instance was deleted: so is its status."""
        self._latest[instance] = None
        await self._write(instance)

    async def _write(self, instance: str) -> None:
        if self._connected() and await self._write_now(instance):
            self._dirty.discard(instance)
            return
        self._dirty.add(instance)
        self._wake.set()

    async def _write_now(self, instance: str) -> bool:
        status = self._latest.get(instance)
        try:
            if self._kv is None:
                self._kv = await self._js.key_value(self._topology.status_bucket)
            if status is None:
                await asyncio.wait_for(self._kv.delete(instance), 2.0)
            else:
                await asyncio.wait_for(
                    self._kv.put(instance, status.model_dump_json().encode()), 2.0
                )
        except UNAVAILABLE:
            return False
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """Write statuses that could not be written when they changed."""
        while not stop.is_set():
            await first_event(self._wake, stop, within=1.0)
            self._wake.clear()
            for instance in list(self._dirty):
                if self._connected() and await self._write_now(instance):
                    self._dirty.discard(instance)
            if self._dirty:
                await first_event(stop, within=0.5)
