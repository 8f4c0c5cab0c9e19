"""The deadlines of heads and bodies are watched by one timer each (`wabus.deadlines`,
`relay.middleware.deadline`), not one per request: a deadline set and cleared again never
fires, one left set fires, and one set after the timer was armed for an earlier one is still
watched once that earlier one is gone."""

from __future__ import annotations

import asyncio

import pytest

from relay.middleware.deadline import BodyDeadlines
from relay.problems import Problem
from wabus.deadlines import Phase, _sweeper_of


class _Connection:
    """Stands in for a `DeadlineProtocol`: records the phases that expired."""

    def __init__(self) -> None:
        self.expired_phases: list[Phase] = []
        self.fired = asyncio.Event()

    def expired(self, phase: Phase, seconds: float) -> None:
        self.expired_phases.append(phase)
        self.fired.set()


async def test_a_cleared_deadline_never_fires_and_a_set_one_does() -> None:
    sweeper = _sweeper_of(asyncio.get_running_loop())
    cleared, kept, later = _Connection(), _Connection(), _Connection()
    sweeper.set(cleared, "body", 0.05)
    sweeper.set(kept, "header", 0.05)
    sweeper.clear(cleared)
    await asyncio.wait_for(kept.fired.wait(), 5)
    sweeper.set(later, "body", 0.1)  # set after the first sweep: the timer is re-armed
    await asyncio.wait_for(later.fired.wait(), 5)
    assert kept.expired_phases == ["header"]
    assert later.expired_phases == ["body"]
    assert cleared.expired_phases == []
    assert not sweeper.deadlines


async def test_re_setting_a_deadline_replaces_it() -> None:
    """A kept-alive connection's next request sets its head deadline again: one entry, the new
    deadline (the old one must not fire in between)."""
    sweeper = _sweeper_of(asyncio.get_running_loop())
    connection, control = _Connection(), _Connection()
    sweeper.set(connection, "header", 0.05)
    sweeper.set(connection, "header", 30.0)
    sweeper.set(control, "header", 0.05)
    await asyncio.wait_for(control.fired.wait(), 5)
    assert connection.expired_phases == []
    assert list(sweeper.deadlines) == [connection]
    sweeper.clear(connection)


async def _stalled_read(deadlines: BodyDeadlines) -> str:
    """A body read whose client never sends the rest: the deadline's 408, or what it got."""
    never = asyncio.Event()

    async def receive() -> dict[str, object]:
        await never.wait()
        return {"type": "http.request", "body": b"", "more_body": False}

    reading = deadlines.start(receive)
    try:
        await reading.receive()
    except Problem as problem:
        return problem.code
    return "read"


async def test_a_body_that_stalls_gets_its_408_after_an_earlier_one_completed() -> None:
    deadlines = BodyDeadlines(0.2)
    complete = deadlines.start(_complete_body)
    assert (await complete.receive())["body"] == b"{}"  # watched, then forgotten at once
    assert await asyncio.wait_for(_stalled_read(deadlines), 5) == "body_timeout"
    assert not deadlines._reading


async def test_bodies_started_one_after_the_other_each_expire_at_their_own_deadline() -> None:
    deadlines = BodyDeadlines(0.2)
    first = asyncio.create_task(_stalled_read(deadlines))
    await asyncio.sleep(0.1)
    second = asyncio.create_task(_stalled_read(deadlines))  # the timer is armed for `first`
    assert await asyncio.wait_for(first, 5) == "body_timeout"
    assert await asyncio.wait_for(second, 5) == "body_timeout"  # still watched after `first`
    assert not deadlines._reading


async def _complete_body() -> dict[str, object]:
    return {"type": "http.request", "body": b"{}", "more_body": False}


@pytest.mark.parametrize("seconds", [0.05, 2.0, 60.0])
async def test_the_sweep_is_at_most_a_quarter_of_the_shortest_deadline(seconds: float) -> None:
    sweeper = _sweeper_of(asyncio.get_running_loop())
    connection = _Connection()
    sweeper.set(connection, "body", seconds)
    assert sweeper.tick <= max(seconds / 4, 0.01)
    sweeper.clear(connection)


def test_the_body_deadline_holds_on_the_next_event_loop_too() -> None:
    """An app served by one loop and then by another (each test client runs its own): the first
    loop's timer never fires, so the deadlines must be watched afresh on the second."""
    deadlines = BodyDeadlines(0.2)

    async def stalled() -> str:
        return await asyncio.wait_for(_stalled_read(deadlines), 5)

    async def abandoned() -> None:  # a read left watched when its loop ends
        reading = deadlines.start(_complete_body)
        reading.task = asyncio.current_task()
        deadlines.watch(reading)

    asyncio.run(abandoned())
    assert asyncio.run(stalled()) == "body_timeout"
