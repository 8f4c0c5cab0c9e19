"""JetStream publishes awaiting their ack, with nothing else on the way.

`JetStreamContext.publish` (and `Client.request` under it) costs, per call, a NUID and random
token, an `asyncio.wait_for` (a second future and its callbacks) and a `PubAck` dataclass. On
the relay's hot path (two acked publishes per signed send) that was about a tenth of the relay's
CPU, so `Acks` keeps one reply subscription per connection, numbers its requests with a counter,
arms one timer per publish and reads the two fields the relay needs straight from the ack's JSON.
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


def _expire(waiter: asyncio.Future[Msg]) -> None:
    if not waiter.done():
        waiter.set_exception(NatsTimeoutError())


class Acks:
    """Acked publishes on one connection; `open` subscribes its reply subject once."""

    def __init__(self, nc: NATS) -> None:
        self._nc = nc
        self._prefix = nc.new_inbox() + "."
        self._waiting: dict[str, asyncio.Future[Msg]] = {}
        self._counter = 0

    @classmethod
    async def open(cls, nc: NATS) -> Acks:
        acks = cls(nc)
        await nc.subscribe(acks._prefix + "*", cb=acks._answer)
        return acks

    async def _answer(self, message: Msg) -> None:
        waiter = self._waiting.pop(message.subject[len(self._prefix) :], None)
        if waiter is not None and not waiter.done():
            waiter.set_result(message)

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
        self._waiting[token] = waiter
        timer = loop.call_later(ACK_TIMEOUT_SECONDS, _expire, waiter)
        try:
            await self._nc.publish(subject, payload, reply=self._prefix + token, headers=headers)
            message = await waiter
        finally:
            timer.cancel()
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
