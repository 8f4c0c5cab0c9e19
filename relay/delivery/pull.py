"""Pulling an endpoint's events from its durable consumer, without a task per message.

nats-py's `PullSubscription.fetch` takes every message through `Subscription.next_msg`, which
makes a task, a uuid and a `wait_for` for each one: measured here at 39 µs of CPU per message,
against 11 µs for the same pull made with a callback (docs/webhooks.md, "Performance"). This is
that pull: one inbox subscription whose callback appends to a queue, and one request open at a
time on JetStream's `$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>` (batch and expiry, the
documented pull API), answered by the messages and, unless the batch was filled, a status message
that ends the request (404 no messages, 408 expired, 409 for the request-level conflicts). A fetch
returns as soon as anything has arrived, so one event is not held back waiting for a batch. The
messages are nats-py's own, so `ack`, `nak` and `in_progress` work as usual. Tested against a real
server in `tests/integration/test_pull.py`.

Messages that arrive after a fetch returned (its request was still open on the server) wait in
the queue for the next fetch, in the order they came: nothing is dropped between fetches.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.errors import ServiceUnavailableError

from wabus.logs import get_logger

log = get_logger(__name__)

ENDS_REQUEST = {"404", "408"}
"""No messages now; the request expired."""
CONSUMER_GONE = ("consumer deleted", "consumer is push based")
LAPSE_GRACE_SECONDS = 0.25
"""Past its expiry, a request whose end never came is taken as over."""


class ConsumerGone(Exception):
    """The durable consumer was deleted (or replaced by a push one): bind it again."""


class Pull:
    """`async with Pull(nc, stream, consumer) as pull:` then `await pull.fetch(256, 0.5)`."""

    def __init__(self, nc: NATS, stream: str, consumer: str) -> None:
        self._nc = nc
        self._next = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._consumer = consumer
        self._ready: deque[Msg] = deque()
        self._coming = 0
        """Messages the open request may still bring (0: none is open)."""
        self._request_lapses = 0.0
        """When the open request is over at the latest (its end may be lost with a connection)."""
        self._wake = asyncio.Event()
        self._failure: Exception | None = None
        self._inbox = nc.new_inbox()
        self._subscription: Subscription | None = None

    async def __aenter__(self) -> Pull:
        self._subscription = await self._nc.subscribe(self._inbox, cb=self._arrived)
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close(hand_back=True)

    async def close(self, *, hand_back: bool) -> None:
        """Stop pulling. The open request is waited out first (JetStream cannot cancel one, and
        what it delivered to a closed inbox would be lost until the acknowledgement window);
        what arrived and was not fetched is handed back (`hand_back`) or left to JetStream to
        redeliver after the window, behind a lost delivery."""
        if self._subscription is None:
            return
        if self._coming:
            self._wake.clear()
            left = self._request_lapses - time.monotonic()
            while self._coming and left > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), left)
                self._wake.clear()
                left = self._request_lapses - time.monotonic()
        try:
            while hand_back and self._ready:
                await self._ready.popleft().nak()
            await self._subscription.unsubscribe()
        except nats.errors.Error as error:  # the connection is gone: so is the subscription
            log.info("pull not closed cleanly", consumer=self._consumer, error=repr(error))
        self._ready.clear()
        self._subscription = None

    async def fetch(self, batch: int, expires: float) -> list[Msg]:
        """Up to `batch` messages in delivery order: at once what has arrived, else the first
        ones to arrive within `expires` seconds (none when JetStream ends the request empty).
        One request is open at a time, for `batch` messages, so a backlog keeps flowing while
        the caller works. Raises `ServiceUnavailableError` when the consumer does not answer
        (503: no leader just now) and `ConsumerGone` when it was deleted."""
        if not self._coming or time.monotonic() > self._request_lapses:
            self._coming = batch
            self._request_lapses = time.monotonic() + expires + LAPSE_GRACE_SECONDS
            request = {"batch": batch, "expires": int(expires * 1e9)}
            await self._nc.publish(self._next, json.dumps(request).encode(), reply=self._inbox)
        if not self._ready and self._failure is None:
            self._wake.clear()
            # no end within the expiry: it was lost with a connection; what came is kept
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), expires + LAPSE_GRACE_SECONDS)
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure
        count = min(batch, len(self._ready))
        return [self._ready.popleft() for _ in range(count)]

    async def _arrived(self, message: Msg) -> None:
        headers = message.headers
        status = headers.get("Status") if headers else None
        if status is None:
            self._ready.append(message)
            self._coming = max(0, self._coming - 1)
            self._wake.set()
            return
        if status == "100":  # an idle heartbeat (never asked for) or flow control
            return
        description = (headers or {}).get("Description", "").lower()
        if status == "503":
            self._failure = ServiceUnavailableError(code=503, description=description)
        elif status == "409" and description.startswith(CONSUMER_GONE):
            self._failure = ConsumerGone(f"{self._consumer}: {description}")
        elif status not in ENDS_REQUEST and status != "409":
            log.warning("unexpected pull status", consumer=self._consumer, status=status)
        self._coming = 0  # the request is over
        self._wake.set()
