"""A deadline for reading a request's body: past it the route gets a 408 `body_timeout` problem
and the connection is closed.

Why a total deadline and not an idle one: a client sending one byte a second is never idle, yet
holds a request (and its buffers) as long as it likes. The server's own backstop
(`wabus.deadlines`) closes such connections a moment later for routes that never read their body;
this one answers with a problem body that says what happened.

Cost: one timer per request that reads its body, armed at the first read and cancelled when the
body is complete (about 2 µs with uvloop, measured; `asyncio.timeout` around each read cost
about 7 µs). The timer cancels the request's task only while it waits for the body, so a route
busy past the deadline is never interrupted in its own work.
"""

from __future__ import annotations

import asyncio

from starlette.types import Message, Receive

from relay.problems import Problem


class BodyDeadline:
    """The body reads of one request, against one deadline counted from its head
    (`relay.middleware.edge` passes `receive` on to the app)."""

    def __init__(self, receive: Receive, seconds: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.deadline = self.loop.time() + seconds
        self.seconds = seconds
        self._receive = receive
        self.done = False
        self.waiting = False
        self.expired = False
        self.timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[object] | None = None

    def _expire(self) -> None:
        """Past the deadline: a read that waits for the client fails (one that finds the body
        already received does not: the route, not the client, was slow)."""
        self.timer = None
        if self.waiting and self.task is not None:
            self.expired = True
            self.task.cancel()

    def _problem(self) -> Problem:
        return Problem(
            408,
            "body_timeout",
            f"the request body did not arrive within {self.seconds:g}s",
            headers={"Connection": "close"},
        )

    async def receive(self) -> Message:
        if self.done:
            return await self._receive()
        if self.timer is None:  # first read, or after the deadline (then it fires at once)
            self.task = asyncio.current_task()
            self.timer = self.loop.call_at(self.deadline, self._expire)
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
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
