"""Per-instance command lanes: one queue and one worker per instance.

A lane runs its instance's commands one at a time, in the order they were fetched, so one
instance's pacing or reconnect never holds up another's commands. What a lane holds is not acked
yet, so the lanes also keep it alive: `in_progress()` every third of the ack wait, or a long
pacing queue would be redelivered while it waits for its turn. An instance that does not exist
keeps no lane once its commands are answered, so made-up instance names cost nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog
from nats.aio.msg import Msg

from connector.admission import Admitted, Refused
from connector.metrics import ERRORS
from connector.waiting import first_event
from wabus.logs import get_logger
from wabus.natsbus import UNAVAILABLE

log = get_logger(__name__)


@dataclass
class Job:
    """A fetched command and the verdict of its admission."""

    message: Msg
    """The latest delivery: a redelivery of a queued command replaces it (its count is the one
    JetStream holds against the bound)."""
    verdict: Admitted | Refused


@dataclass
class Lane:
    """One instance's command queue, its worker, and its pacing clock."""

    queue: asyncio.Queue[Job] = field(default_factory=asyncio.Queue)
    waiting: dict[int, Job] = field(default_factory=dict)
    """Stream sequence → command not yet finished (queued or running)."""
    last_sent_at: float | None = None
    """`time.monotonic()` of the instance's last send, for pacing."""
    worker: asyncio.Task[None] | None = None
    busy: bool = False


Run = Callable[[str, Lane, Job], Awaitable[None]]
"""Runs one command of an instance to its end (answered, acked or handed back); never raises
by design, and a lane survives it if it does."""


class Lanes:
    """The lanes of every instance that has commands, made on first use."""

    def __init__(self, run: Run, stray: Callable[[str], bool]) -> None:
        self._run = run
        self._stray = stray
        """An instance that neither runs here nor exists: its lane goes once it is empty."""
        self._lanes: dict[str, Lane] = {}
        self._stopping = False

    def __contains__(self, instance: object) -> bool:
        return instance in self._lanes

    def put(self, instance: str, job: Job) -> None:
        """Queue `job` on its instance's lane. A redelivery of a command still queued here only
        replaces the queued message: the queued job answers, with this delivery."""
        lane = self._lanes.get(instance)
        if lane is None:
            lane = self._lanes[instance] = Lane()
            lane.worker = asyncio.create_task(self._work(instance, lane), name=f"lane:{instance}")
        sequence = job.message.metadata.sequence.stream
        queued = lane.waiting.get(sequence)
        if queued is not None:
            queued.message = job.message
            return
        lane.waiting[sequence] = job
        lane.queue.put_nowait(job)

    async def keep_alive(self, stop: asyncio.Event, every: float) -> None:
        """Tell JetStream that queued commands are being worked on, so they are not redelivered
        while they wait for their turn."""
        while not stop.is_set():
            await first_event(stop, within=every)
            for lane in list(self._lanes.values()):
                for job in list(lane.waiting.values()):
                    try:
                        await job.message.in_progress()
                    except UNAVAILABLE as error:
                        log.debug("in_progress not sent", error=type(error).__name__)

    async def finish(self, within: float) -> None:
        """Stop taking commands, and let the ones already running finish (a send cut off
        mid-call would come back as `outcome_unknown`); queued ones stay unacked and are
        redelivered to the next connector."""
        self._stopping = True
        deadline = asyncio.get_running_loop().time() + within
        while any(lane.busy for lane in self._lanes.values()):
            if asyncio.get_running_loop().time() > deadline:
                log.warning("commands still running at shutdown are cut off")
                return
            await asyncio.sleep(0.02)

    def cancel(self) -> list[asyncio.Task[None]]:
        """Cancel every worker; the caller awaits the tasks returned."""
        workers = [lane.worker for lane in self._lanes.values() if lane.worker]
        for worker in workers:
            worker.cancel()
        return workers

    async def _work(self, instance: str, lane: Lane) -> None:
        structlog.contextvars.bind_contextvars(instance=instance)
        while not self._stopping:
            job = await lane.queue.get()
            if self._stopping:
                return
            lane.busy = True
            try:
                await self._run(instance, lane, job)
            except Exception:
                # the runner answers every failure; this is a failure of that answer itself
                ERRORS.labels("command_crashed").inc()
                log.exception("answering a failed command failed; it will be redelivered")
            finally:
                lane.busy = False
                lane.waiting.pop(job.message.metadata.sequence.stream, None)
            if lane.queue.empty() and self._stray(instance) and self._lanes.get(instance) is lane:
                del self._lanes[instance]
                return
