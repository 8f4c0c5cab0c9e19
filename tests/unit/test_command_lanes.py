"""Per-instance command lanes, with hand-written stand-ins for JetStream messages: order within an
instance, independence between instances, redeliveries of queued commands, stray instances,
keep-alive and shutdown. No NATS, no clock: every wait is on an event."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import cast

import pytest
from nats.aio.msg import Msg

from connector.admission import Refused
from connector.lanes import Job, Lane, Lanes

WAIT = 5.0
"""Bound on waiting for something that must happen (a hang fails, it is not measured)."""


@dataclass
class FakeMessage:
    """What the lanes use of a JetStream message: its stream sequence, its delivery count, and
    `in_progress()`."""

    sequence: int
    delivered: int = 1
    kept_alive: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def metadata(self) -> SimpleNamespace:
        stream = SimpleNamespace(stream=self.sequence)
        return SimpleNamespace(sequence=stream, num_delivered=self.delivered)

    async def in_progress(self) -> None:
        self.kept_alive.set()


def job(instance: str, sequence: int, delivered: int = 1) -> Job:
    message = cast(Msg, FakeMessage(sequence, delivered))
    return Job(message, Refused("test", instance=instance))


@dataclass
class Recorder:
    """The lanes' `run`: records (instance, sequence, delivery) and holds each instance in a
    gate until the test opens it."""

    ran: list[tuple[str, int, int]] = field(default_factory=list)
    gates: dict[str, asyncio.Event] = field(default_factory=dict)
    started: dict[int, asyncio.Event] = field(default_factory=dict)
    done: dict[int, asyncio.Event] = field(default_factory=dict)

    def gate(self, instance: str) -> asyncio.Event:
        return self.gates.setdefault(instance, asyncio.Event())

    def started_event(self, sequence: int) -> asyncio.Event:
        return self.started.setdefault(sequence, asyncio.Event())

    def done_event(self, sequence: int) -> asyncio.Event:
        return self.done.setdefault(sequence, asyncio.Event())

    async def __call__(self, instance: str, lane: Lane, job: Job) -> None:
        sequence = job.message.metadata.sequence.stream
        self.started_event(sequence).set()
        gate = self.gates.get(instance)
        if gate is not None:
            await gate.wait()
        self.ran.append((instance, sequence, job.message.metadata.num_delivered))
        self.done_event(sequence).set()


async def reached(event: asyncio.Event) -> None:
    await asyncio.wait_for(event.wait(), WAIT)


@pytest.fixture
async def recorder() -> Recorder:
    return Recorder()


def lanes_of(recorder: Recorder, stray: Callable[[str], bool] = lambda _: False) -> Lanes:
    return Lanes(recorder, stray)


@pytest.fixture
async def lanes(recorder: Recorder) -> AsyncIterator[Lanes]:
    made = lanes_of(recorder)
    yield made
    await asyncio.gather(*made.cancel(), return_exceptions=True)


async def test_an_instance_runs_its_commands_in_order_without_holding_up_another(
    lanes: Lanes, recorder: Recorder
) -> None:
    slow = recorder.gate("slow")
    lanes.put("slow", job("slow", 1))
    lanes.put("slow", job("slow", 2))
    lanes.put("fast", job("fast", 3))
    await reached(recorder.done_event(3))  # fast went through while slow's first is held
    await reached(recorder.started_event(1))
    assert not recorder.started_event(2).is_set()  # one at a time: slow's second waits
    slow.set()
    await reached(recorder.done_event(2))  # positive control: it runs once the first is done
    assert [entry for entry in recorder.ran if entry[0] == "slow"] == [
        ("slow", 1, 1), ("slow", 2, 1),
    ]  # fmt: skip


async def test_a_redelivery_of_a_queued_command_replaces_its_message(
    lanes: Lanes, recorder: Recorder
) -> None:
    gate = recorder.gate("acme")
    lanes.put("acme", job("acme", 1))
    await reached(recorder.started_event(1))
    lanes.put("acme", job("acme", 2, delivered=1))
    lanes.put("acme", job("acme", 2, delivered=2))  # redelivered while still queued
    gate.set()
    await reached(recorder.done_event(2))
    lanes.put("acme", job("acme", 3))
    await reached(recorder.done_event(3))  # everything queued before it has run
    assert recorder.ran == [("acme", 1, 1), ("acme", 2, 2), ("acme", 3, 1)]


async def test_a_stray_instance_keeps_no_lane(recorder: Recorder) -> None:
    lanes = lanes_of(recorder, stray=lambda instance: instance == "nobody")
    try:
        lanes.put("nobody", job("nobody", 1))
        lanes.put("acme", job("acme", 2))
        await reached(recorder.done_event(1))
        await reached(recorder.done_event(2))
        for _ in range(100):  # the worker drops its lane right after the run returns
            if "nobody" not in lanes:
                break
            await asyncio.sleep(0)
        assert "nobody" not in lanes
        assert "acme" in lanes  # positive control: a real instance keeps its lane
    finally:
        await asyncio.gather(*lanes.cancel(), return_exceptions=True)


async def test_running_and_queued_commands_are_kept_alive(lanes: Lanes, recorder: Recorder) -> None:
    gate = recorder.gate("acme")
    running, queued = job("acme", 1), job("acme", 2)
    lanes.put("acme", running)
    lanes.put("acme", queued)
    stop = asyncio.Event()
    keeper = asyncio.create_task(lanes.keep_alive(stop, every=0.01))
    try:
        await reached(cast(FakeMessage, running.message).kept_alive)
        await reached(cast(FakeMessage, queued.message).kept_alive)
    finally:
        stop.set()
        gate.set()
        await asyncio.wait_for(keeper, WAIT)


async def test_shutdown_finishes_the_running_command_and_leaves_queued_ones(
    lanes: Lanes, recorder: Recorder
) -> None:
    gate = recorder.gate("acme")
    lanes.put("acme", job("acme", 1))
    lanes.put("acme", job("acme", 2))
    await reached(recorder.started_event(1))
    finishing = asyncio.create_task(lanes.finish(within=WAIT))
    await asyncio.sleep(0)
    assert not finishing.done()  # it waits for the running command
    gate.set()
    await asyncio.wait_for(finishing, WAIT)
    assert recorder.ran == [("acme", 1, 1)]  # the running one finished; the queued one did not run
