"""A deadline for reading a request's body: past it the route gets a 408 `body_timeout` problem
and the connection is closed.

Why a total deadline and not an idle one: a client sending one byte a second is never idle, yet
holds a request (and its buffers) as long as it likes. The server's own backstop
(`wabus.deadlines`) closes such connections a moment later for routes that never read their body;
this one answers with a problem body that says what happened.

Cost: one timer for every body being read (`BodyDeadlines`), not one per request. A request
whose body is already in (nearly every one) only enters and leaves an ordered dict: ~2 µs of
the relay's CPU per signed send less than a timer armed and cancelled per request (in process
on a real nats-server, medians of four runs); `asyncio.timeout` around each read cost more.
The deadline cancels the request's task only while it waits for the body, so a route busy past
the deadline is never interrupted in its own work: its next read that has to wait fails.
"""

from __future__ import annotations

import asyncio

from starlette.types import Message, Receive

from relay.problems import Problem


class BodyDeadlines:
    """The bodies being read under one deadline, and the one timer that watches them.

    Every body gets the same number of seconds, so the order they started in is the order their
    deadlines pass: the timer is armed for the oldest only."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._reading: dict[BodyDeadline, float] = {}
        """Reads in progress and their deadlines, oldest first."""
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, receive: Receive) -> BodyDeadline:
        """The deadline of one request's body, counted from now (its head is in)."""
        loop = asyncio.get_running_loop()
        return BodyDeadline(self, receive, loop, loop.time() + self.seconds)

    def watch(self, reading: BodyDeadline) -> None:
        if reading.loop is not self._loop:  # an app served by another loop than before (tests):
            self._loop, self._timer = reading.loop, None  # the old loop's timer never fires
            self._reading.clear()
        self._reading[reading] = reading.deadline
        if self._timer is None:
            self._timer = reading.loop.call_at(reading.deadline, self._sweep, reading.loop)

    def forget(self, reading: BodyDeadline) -> None:
        self._reading.pop(reading, None)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        """Expire the reads past their deadline, then re-arm for the oldest left."""
        self._timer = None
        now = loop.time()
        while self._reading:
            reading, deadline = next(iter(self._reading.items()))
            if deadline > now:
                self._timer = loop.call_at(deadline, self._sweep, loop)
                return
            del self._reading[reading]
            reading.expire()


class BodyDeadline:
    """The body reads of one request (`relay.middleware.edge` passes `receive` on to the app)."""

    __slots__ = ("_receive", "deadline", "deadlines", "done", "expired", "loop", "task", "waiting")

    def __init__(
        self,
        deadlines: BodyDeadlines,
        receive: Receive,
        loop: asyncio.AbstractEventLoop,
        deadline: float,
    ) -> None:
        self.deadlines = deadlines
        self._receive = receive
        self.loop = loop
        self.deadline = deadline
        self.done = False
        self.waiting = False
        self.expired = False
        self.task: asyncio.Task[object] | None = None

    def expire(self) -> None:
        """Past the deadline: a read that waits for the client fails (one that finds the body
        already received does not: the route, not the client, was slow)."""
        if self.waiting and not self.expired and self.task is not None:
            self.expired = True
            self.task.cancel()

    def _problem(self) -> Problem:
        return Problem(
            408,
            "body_timeout",
            f"the request body did not arrive within {self.deadlines.seconds:g}s",
            headers={"Connection": "close"},
        )

    async def receive(self) -> Message:
        if self.done:
            return await self._receive()
        if self.task is None:  # the first read
            self.task = asyncio.current_task()
            self.deadlines.watch(self)
        elif self.loop.time() >= self.deadline:  # past it while the route worked: if this read
            self.loop.call_soon(self.expire)  # has to wait, it fails at once
        self.waiting = True
        try:
            message = await self._receive()
        except asyncio.CancelledError:
            if not self.expired or self.task is None:
                raise
            self.task.uncancel()
            raise self._problem() from None
        finally:
            self.waiting = False
        if message["type"] != "http.request" or not message.get("more_body", False):
            self.stop()
        return message

    def stop(self) -> None:
        self.done = True
        self.deadlines.forget(self)
