"""JetStream publishes awaiting their ack, with nothing else on the way.

`JetStreamContext.publish` (and `Client.request` under it) costs, per call, a NUID and random
token, an `asyncio.wait_for` (a second future and its callbacks) and a `PubAck` dataclass. On
the relay's hot path (two acked publishes per signed send) that was about a tenth of the relay's
CPU, so `Acks` keeps one reply subscription per connection, numbers its requests with a counter,
lets one timer watch every publish in flight for its timeout, and reads the two fields the
relay needs straight from the ack's JSON.
"""

from __future__ import annotations

import asyncio

import pydantic_core
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import APIError, NoStreamResponseError

ACK_TIMEOUT_SECONDS = 5.0
_NO_RESPONDERS = "503"


class Acks:
    """Acked publishes on one connection; `open` subscribes its reply subject once."""

    def __init__(self, nc: NATS) -> None:
        self._nc = nc
        self._prefix = nc.new_inbox() + "."
        self._waiting: dict[str, tuple[asyncio.Future[Msg], float]] = {}
        """Waiters and their deadlines, by token."""
        self._counter = 0
        self._sweep: asyncio.TimerHandle | None = None

    @classmethod
    async def open(cls, nc: NATS) -> Acks:
        acks = cls(nc)
        await nc.subscribe(acks._prefix + "*", cb=acks._answer)
        return acks

    async def _answer(self, message: Msg) -> None:
        found = self._waiting.pop(message.subject[len(self._prefix) :], None)
        if found is not None and not found[0].done():
            found[0].set_result(message)

    def _expire(self) -> None:
        """One timer for every publish in flight (not one each, armed and cancelled per send):
        fails those past their deadline and re-arms for the earliest left."""
        self._sweep = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        for token, (waiter, deadline) in list(self._waiting.items()):
            if deadline <= now:
                del self._waiting[token]
                if not waiter.done():
                    waiter.set_exception(NatsTimeoutError())
        if self._waiting:
            self._arm(loop, min(deadline for _, deadline in self._waiting.values()))

    def _arm(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
        self._sweep = loop.call_at(deadline, self._expire)

    async def publish(
        self, subject: str, payload: bytes, headers: dict[str, str]
    ) -> tuple[int, bool]:
        """Publish and wait for JetStream's ack: `(sequence, duplicate)`. Raises `APIError`
        (with `err_code`) when the stream refused the message, nats' `TimeoutError` without an
        answer, `NoStreamResponseError` when no stream takes the subject."""
        self._counter += 1
        token = str(self._counter)
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Msg] = loop.create_future()
        deadline = loop.time() + ACK_TIMEOUT_SECONDS
        self._waiting[token] = (waiter, deadline)
        if self._sweep is None or deadline < self._sweep.when():  # with one timeout: rarely
            self._arm(loop, deadline)
        try:
            await self._nc.publish(subject, payload, reply=self._prefix + token, headers=headers)
            message = await waiter
        finally:
            self._waiting.pop(token, None)
        if not message.data and message.headers and message.headers.get("Status") == _NO_RESPONDERS:
            raise NoStreamResponseError
        ack = pydantic_core.from_json(message.data)  # a third of json.loads' time on an ack
        if "error" in ack:
            refusal = ack["error"]
            raise APIError(
                code=refusal.get("code"),
                err_code=refusal.get("err_code"),
                description=refusal.get("description"),
            )
        return int(ack["seq"]), bool(ack.get("duplicate"))
