"""Instances as data: the configuration bucket says which sessions should run; this makes it so.

The watch starts with every key's current value (so a restart restores every instance), then
follows changes: a new key starts a session, `desired_state: stopped` stops it, a deleted key stops
it and removes its status, and writing a key again restarts a session that ended (logged out,
failed). The connector takes at most `WABUS_MAX_SESSIONS` sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable

from nats.js import JetStreamContext

from connector.engine import EmitEvent, Engine
from connector.inbound import Inbound
from connector.lifecycle import Policy
from connector.metrics import ERRORS
from connector.status import StatusBoard
from connector.supervisor import SessionSupervisor
from connector.waiting import first_event
from schemas.envelope import utc_now
from schemas.instances import CallPolicy, InstanceConfig, InstanceStatus, SessionState
from schemas.subjects import Topology
from wabus.configwatch import ConfigWatch
from wabus.leases import Leases
from wabus.logs import get_logger

log = get_logger(__name__)


class InstanceManager:
    def __init__(
        self,
        engine: Engine,
        emit: EmitEvent,
        inbound: Inbound,
        board: StatusBoard,
        policy: Policy,
        connector_id: str,
        max_sessions: int,
        leases: Leases | None = None,
        takeover_rate: float = 10.0,
    ) -> None:
        self._leases = leases
        self._takeover_pause = 1 / takeover_rate
        """Seconds between two sessions taken over from another connector: a connector picking
        up a stopped or dead one's instances opens them at a bounded rate, not all at once."""
        self._desired: dict[str, tuple[InstanceConfig, int | None]] = {}
        """Instances configured to run, with their config revision (held here or elsewhere)."""
        self._engine = engine
        self._emit = emit
        self._inbound = inbound
        self._board = board
        self._policy = policy
        self._connector_id = connector_id
        self._max_sessions = max_sessions
        self._rng = random.Random()  # noqa: S311 - jitter, not security
        self.supervisors: dict[str, SessionSupervisor] = {}
        self._revisions: dict[str, int | None] = {}
        self.loaded = asyncio.Event()
        """Set once the configuration present at start has been applied."""
        self._watch = ConfigWatch(
            self.apply, lambda: set(self.supervisors), lambda kind: ERRORS.labels(kind).inc()
        )

    def get(self, instance: str) -> SessionSupervisor | None:
        return self.supervisors.get(instance)

    def exists(self, instance: str) -> bool:
        """In the configuration bucket (running or stopped)."""
        return instance in self._revisions

    def held_elsewhere(self, instance: str) -> bool:
        """Configured to run, with leases on, and not held here: another connector's."""
        return (
            self._leases is not None
            and instance in self._desired
            and instance not in self.supervisors
        )

    async def apply(
        self, instance: str, config: InstanceConfig | None, revision: int | None = None
    ) -> None:
        """Make the session of `instance` match `config` (None: the instance was deleted).
        `revision` (of the config entry) tells a new write from the same one seen again."""
        supervisor = self.supervisors.get(instance)
        seen, self._revisions[instance] = self._revisions.get(instance), revision
        if config is None:
            self._revisions.pop(instance, None)
        if config is None or config.desired_state == "stopped":
            self._desired.pop(instance, None)
            if supervisor is not None:
                del self.supervisors[instance]
                await supervisor.stop("deleted" if config is None else "desired_state stopped")
                if self._leases:
                    await self._leases.release(instance)
            if config is None:
                await self._board.forget(instance)
            elif supervisor is None:
                await self._board.put(self._stopped(instance))
            log.info("instance stopped", instance=instance, deleted=config is None)
            return
        self._desired[instance] = (config, revision)
        if supervisor is not None:
            if revision is None or revision != seen:
                supervisor.restart()
            return
        if self._leases and instance not in self._leases.held:
            if len(self.supervisors) >= self._max_sessions:
                return  # at capacity: leave it to a connector with room
            if not await self._leases.acquire(instance):
                log.info("instance held by another connector", instance=instance)
                return
        if len(self.supervisors) >= self._max_sessions:
            ERRORS.labels("over_capacity").inc()
            log.error("instance not started: connector at capacity", instance=instance)
            await self._board.put(
                InstanceStatus(
                    instance=instance,
                    state=SessionState.FAILED,
                    reason_code="over_capacity",
                    reason=f"this connector runs at most {self._max_sessions} sessions",
                    connector=self._connector_id,
                    updated_at=utc_now(),
                )
            )
            return
        supervisor = SessionSupervisor(
            instance,
            self._engine,
            self._emit,
            self._inbound,
            self._board,
            self._policy,
            self._connector_id,
            random.Random(self._rng.random()),  # noqa: S311
            calls=lambda: self._call_policy(instance),
        )
        self.supervisors[instance] = supervisor
        supervisor.start()
        log.info("instance started", instance=instance)

    def _call_policy(self, instance: str) -> CallPolicy:
        desired = self._desired.get(instance)
        return desired[0].calls if desired is not None else CallPolicy()

    def _stopped(self, instance: str) -> InstanceStatus:
        return InstanceStatus(
            instance=instance,
            state=SessionState.STOPPED,
            reason_code="stopped",
            reason="desired_state stopped",
            connector=self._connector_id,
            updated_at=utc_now(),
        )

    async def watch(
        self,
        js: JetStreamContext,
        topology: Topology,
        stop: asyncio.Event,
        reconnects: Callable[[], int] = lambda: 0,
    ) -> None:
        """Follow the configuration bucket until `stop` (see `wabus.configwatch`)."""

        async def restored() -> None:
            await self._watch.loaded.wait()
            self.loaded.set()
            log.info("instances restored", count=len(self.supervisors))

        announce = asyncio.create_task(restored())
        try:
            await self._watch.run(js, topology, stop, reconnects)
        finally:
            announce.cancel()

    async def keep_leases(self, stop: asyncio.Event) -> None:
        """Renew held leases every third of the lease time; stop a session whose lease is lost
        at once, and claim configured instances nobody holds (their connector died)."""
        if self._leases is None:
            return
        leases = self._leases
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), leases.ttl / 3)
            if stop.is_set():
                return
            for instance in await leases.renew():
                supervisor = self.supervisors.pop(instance, None)
                if supervisor is not None:
                    await supervisor.stop("lease lost", report=False)
            await self._take_over_vacant(stop)

    async def _take_over_vacant(self, stop: asyncio.Event) -> None:
        """Claim configured instances nobody holds, one every `_takeover_pause` seconds."""
        taken = 0
        for instance, (config, revision) in list(self._desired.items()):
            if stop.is_set():
                return
            if instance in self.supervisors:
                continue
            await self.apply(instance, config, revision)
            if instance in self.supervisors:
                taken += 1
                await first_event(stop, within=self._takeover_pause)
        if taken:
            log.info("instances taken over", count=taken, sessions=len(self.supervisors))

    async def close(self) -> None:
        """Stop every session; each lease is released as soon as its session is closed, so
        another connector can open it at once (a rolling deploy), never while it is open here."""
        supervisors, self.supervisors = self.supervisors, {}

        async def hand_over(instance: str, supervisor: SessionSupervisor) -> None:
            await supervisor.stop("connector shutting down")
            if self._leases:
                await self._leases.release(instance)

        await asyncio.gather(*(hand_over(name, each) for name, each in supervisors.items()))
