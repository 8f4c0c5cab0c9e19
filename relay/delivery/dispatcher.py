"""Delivers one endpoint's events: its own durable consumer on `WA_EVENTS`, its own per-chat lanes
and its own sender (`relay.delivery.sender`: the HTTP side and its connection pool), so a slow or
dead endpoint delays nobody else.

One relay at a time holds an endpoint's lease and delivers for it; that is what keeps each chat's
events in publish order when several relay replicas run. The others stand by and take over when
the lease expires or is handed over (the endpoints are shared out among the relays:
`relay.delivery.balance`). Every attempt goes through `policy.decide`; this module only gathers
its inputs and applies the decision: ack, nak with the delay, dead-letter, or disable the
endpoint.

Order across a takeover (docs/webhooks.md, "Ordering"): a holder starts a request only while it
is sure of its lease (`Leases.holds`), and keeps the events waiting in its lanes from being
redelivered with heartbeats. A relay that takes an endpoint over from a holder that vanished,
rather than handed it back, waits one acknowledgement window before fetching: by then every
request the old holder started has ended, and JetStream redelivers everything it held — first,
and in stream order — so no chat's later event overtakes an earlier one. The same wait follows a
delivery lost between JetStream and this relay (a skipped consumer sequence: a NATS node died with
it in flight) and a subscription that NATS failed under: what was fetched before is finished, what
came after is left to expire behind the lost one.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field, replace

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from relay.delivery import metrics
from relay.delivery.attempts import AttemptCounts
from relay.delivery.balance import Balance
from relay.delivery.events import EventRef, Poison, read_event
from relay.delivery.lanes import ChatLanes
from relay.delivery.policy import (
    DeadLetter,
    Delivered,
    RetryIn,
)
from relay.delivery.pull import ConsumerGone, Pull
from relay.delivery.records import DeliveryLog, Trigger
from relay.delivery.sender import EndpointSender
from relay.delivery.sequence import DeliverySequence
from relay.delivery.states import EndpointStates
from relay.delivery.targets import Target
from schemas.envelope import encode, make_event
from schemas.events import WebhookEndpointDisabled
from wabus.leases import Leases
from wabus.logs import get_logger
from wabus.natsbus import UNAVAILABLE
from wabus.settings import Settings

log = get_logger(__name__)

ACK_MARGIN_SECONDS = 5.0
"""The acknowledgement window is one whole request (`WABUS_WEBHOOK_TIMEOUT`) plus this."""
HEARTBEATS_PER_WINDOW = 4
"""Fetched events not finished yet are marked in progress this often per acknowledgement window,
so a slow endpoint's backlog is never redelivered behind the dispatcher's back."""
REDELIVERY_LAG_SECONDS = 1.0
"""JetStream notices expired acknowledgements on a timer: a taking-over relay waits this much
longer than the window."""
UNSETTLED_RETRY_SECONDS = 5.0
"""An event whose handling failed unexpectedly (NATS trouble) is offered again after this long."""
FETCH_BATCH = 256
STATE_CHECK_SECONDS = 2.0
FETCH_RETRY_SECONDS = 0.5
FETCH_EXPIRES_SECONDS = 0.5
STOP_GRACE_SECONDS = 5.0
POISON_LANE = ("", "poison")


def ack_window(settings: Settings) -> float:
    """Seconds JetStream waits for an event's acknowledgement before giving it to another relay."""
    return settings.webhook_timeout + ACK_MARGIN_SECONDS


@dataclass(frozen=True)
class Shared:
    """What every endpoint's dispatcher in one relay process works with."""

    nc: NATS
    js: JetStreamContext
    settings: Settings
    log: DeliveryLog
    leases: Leases
    """Which relay delivers for which endpoint."""
    states: EndpointStates
    """Which endpoints are disabled."""
    attempts: AttemptCounts
    """How many requests each event being retried has had."""
    balance: Balance = field(default_factory=Balance)
    """How many leases this relay should hold (`relay.delivery.balance`)."""


Fetched = tuple[Msg, EventRef | Poison]


class EndpointDispatcher:
    def __init__(self, target: Target, shared: Shared) -> None:
        self.sender = EndpointSender(target, shared.js, shared.settings, shared.log)
        """Posts the events; the operator's retry and recovery use it too."""
        self._nc = shared.nc
        self._js = shared.js
        self._settings = shared.settings
        self._topology = shared.settings.topology
        self._log = shared.log
        self._leases = shared.leases
        self._states = shared.states
        self._attempts = shared.attempts
        self._balance = shared.balance
        self.lease_lost = asyncio.Event()
        self.handing_over = asyncio.Event()
        """Set to give the endpoint to another relay: what was fetched is finished, nothing more
        is fetched, then the lease is released with the hand-over marker."""
        self._pending: dict[int, Msg] = {}
        """Fetched and not finished, by `id()` (messages are not hashable)."""

    @property
    def target(self) -> Target:
        return self.sender.target

    @target.setter
    def target(self, target: Target) -> None:
        """The endpoint's configuration changed (its URL, secrets or filters)."""
        self.sender.target = target

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver while this relay holds the endpoint's lease; stand by otherwise."""
        key = self.target.key
        while not stop.is_set():
            try:
                disabled = await self._states.disabled(key) is not None
                self._balance.note(key, disabled=disabled)  # the shares count enabled ones
                if (
                    not disabled
                    and self._balance.may_claim(len(self._leases.held))
                    and await self._leases.acquire(key)
                ):
                    self.lease_lost.clear()
                    metrics.ENDPOINTS_HELD.inc()
                    try:
                        await self._deliver_while_held(stop)
                    finally:
                        metrics.ENDPOINTS_HELD.dec()
                        await self._leases.release(key)
                        if self.handing_over.is_set():
                            self.handing_over.clear()
                            log.info("webhook endpoint handed over", endpoint=key)
            except UNAVAILABLE as error:
                log.warning("endpoint dispatcher restarting", endpoint=key, error=repr(error))
            except Exception:
                log.exception("endpoint dispatcher failed: restarting", endpoint=key)
            try:
                await asyncio.wait_for(stop.wait(), self._leases.ttl / 3)
            except TimeoutError:
                continue
        await self.sender.close()
        log.info("endpoint dispatcher stopped", endpoint=key)

    def _consumer_config(self) -> ConsumerConfig:
        target = self.target
        config = ConsumerConfig(
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=ack_window(self._settings),
            max_ack_pending=20_000,
            description=f"wabus webhooks for {target.key}",
            deliver_policy=DeliverPolicy.ALL,
            durable_name=target.consumer,
            filter_subject=target.events_subject(self._topology),
        )
        if target.start is not None:
            config.deliver_policy = DeliverPolicy.BY_START_TIME
            config.opt_start_time = target.start
        return config

    async def _bind(self) -> Pull:
        """The endpoint's durable consumer (made, or its acknowledgement window brought up to
        date) and a pull on it."""
        stream, consumer = self._topology.events_stream, self.target.consumer
        wanted = self._consumer_config()
        try:
            info = await self._js.consumer_info(stream, consumer)
        except NotFoundError:
            await self._js.add_consumer(stream, wanted)
        else:
            if abs((info.config.ack_wait or 0) - (wanted.ack_wait or 0)) > 0.001:
                await self._js.add_consumer(stream, replace(info.config, ack_wait=wanted.ack_wait))
                log.info("webhook consumer's acknowledgement window updated", consumer=consumer)
        return Pull(self._nc, stream, consumer)

    async def _await_previous_holder(self, stop: asyncio.Event) -> None:
        """After taking the endpoint over from a holder that vanished, wait until nothing it
        started can still arrive and everything it held is back with JetStream."""
        key = self.target.key
        if self._leases.handed_over(key):
            return
        info = await self._js.consumer_info(self._topology.events_stream, self.target.consumer)
        if not info.num_ack_pending:
            return
        window = (info.config.ack_wait or ack_window(self._settings)) + REDELIVERY_LAG_SECONDS
        log.info(
            "endpoint taken over: waiting out the previous holder's acknowledgement window",
            endpoint=key,
            seconds=window,
            unacknowledged=info.num_ack_pending,
        )
        await self._wait_until(stop, time.monotonic() + window)

    async def _wait_until(self, stop: asyncio.Event, deadline: float) -> None:
        """Sleep until `deadline` (monotonic), unless stopping or the lease is lost first."""
        while not self._leaving(stop) and not self.lease_lost.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                await asyncio.wait_for(stop.wait(), min(left, 0.5))
            except TimeoutError:
                continue

    async def _next_delivery(self) -> DeliverySequence:
        info = await self._js.consumer_info(self._topology.events_stream, self.target.consumer)
        return DeliverySequence(info.delivered.consumer_seq + 1)

    def _leaving(self, stop: asyncio.Event) -> bool:
        """Stopping, or handing the endpoint over."""
        return stop.is_set() or self.handing_over.is_set()

    def _holding(self) -> bool:
        return not self.lease_lost.is_set() and self._leases.holds(self.target.key)

    async def _deliver_while_held(self, stop: asyncio.Event) -> None:
        """Deliver, one subscription after another. When a delivery went missing on its way here
        or NATS failed under a subscription, what that subscription had not started goes back to
        JetStream, and the next one fetches only after one acknowledgement window: by then
        JetStream holds everything unfinished again and gives it back first, so no chat's later
        event overtakes a missing one (`relay.delivery.sequence`)."""
        key = self.target.key
        window = ack_window(self._settings) + REDELIVERY_LAG_SECONDS
        taking_over = True
        while not self._leaving(stop) and self._holding():
            try:
                interrupted_at = await self._deliver_until_interrupted(stop, taking_over)
            except (*UNAVAILABLE, ConsumerGone) as error:
                interrupted_at = time.monotonic()
                log.warning(
                    "webhook delivery interrupted: NATS failed or the consumer went; resuming "
                    "after one acknowledgement window, so what was in flight comes back first",
                    endpoint=key,
                    seconds=window,
                    error=repr(error),
                )
            taking_over = False
            if interrupted_at is None:
                return
            await self._wait_until(stop, interrupted_at + window)

    async def _deliver_until_interrupted(
        self, stop: asyncio.Event, taking_over: bool
    ) -> float | None:
        """One subscription's deliveries. Returns when a delivery was found missing (monotonic
        time), or None when stopping, the lease is lost or the endpoint disabled."""
        key = self.target.key
        heartbeat: asyncio.Task[None] | None = None
        lost_at: float | None = None
        pull = await self._bind()
        async with pull:
            try:
                if taking_over:
                    await self._await_previous_holder(stop)
                sequence = await self._next_delivery()
                heartbeat = asyncio.create_task(self._heartbeat(stop))
                log.info("delivering webhooks", endpoint=key, consumer=self.target.consumer)
                checked = time.monotonic()
                concurrency = self._settings.webhook_concurrency
                async with ChatLanes[Fetched](self._handle, concurrency) as lanes:
                    while lost_at is None and not self._leaving(stop) and self._holding():
                        if time.monotonic() - checked > STATE_CHECK_SECONDS:
                            checked = time.monotonic()
                            if await self._disabled():
                                break
                        await lanes.wait_below(concurrency * 4)
                        if not await self._fetch_into(lanes, pull, sequence):
                            lost_at = time.monotonic()  # the rest is left to JetStream
                    # fetched before a loss means earlier in the stream, and a hand-over is
                    # clean only when nothing is cut off: finish it all
                    finish = lost_at is not None or self.handing_over.is_set()
                    grace = ack_window(self._settings) if finish else STOP_GRACE_SECONDS
                    try:
                        await asyncio.wait_for(lanes.drain(), grace)
                    except TimeoutError:
                        log.info("stopping with events in flight: handed back", endpoint=key)
            finally:  # what is still in a lane now goes back to JetStream for the next holder
                if heartbeat is not None:
                    heartbeat.cancel()
                await self._release_pending()
                # after a loss, what came behind it is left to expire behind it
                await pull.close(hand_back=lost_at is None)
        return lost_at

    async def _fetch_into(
        self, lanes: ChatLanes[Fetched], pull: Pull, sequence: DeliverySequence
    ) -> bool:
        """Fetch the next events into their chats' lanes, in stream order; False when a delivery
        went missing (only what arrived before it was taken)."""
        fetched = await self._fetch(pull)
        arrived = self._before_loss(sequence, fetched)
        if len(arrived) > 1:  # redeliveries queued at different times
            arrived.sort(key=_stream_sequence)
        for message in arrived:
            self._pending[id(message)] = message
            seq = _stream_sequence(message)
            read = read_event(message.subject, message.data, seq)
            lane = POISON_LANE if isinstance(read, Poison) else read.lane
            lanes.submit(lane, (message, read))
        return len(arrived) == len(fetched)

    async def _disabled(self) -> bool:
        key = self.target.key
        try:
            disabled = await self._states.disabled(key) is not None
        except UNAVAILABLE as error:
            log.info("endpoint state not checked: NATS away", endpoint=key, error=repr(error))
            return False
        if disabled:
            log.warning("endpoint disabled: delivery paused", endpoint=key)
        return disabled

    async def _fetch(self, pull: Pull) -> list[Msg]:
        """The next events, as delivered; none while NATS is away (the pull is kept, so a
        delivery lost meanwhile shows as a skipped sequence)."""
        try:
            return await pull.fetch(FETCH_BATCH, FETCH_EXPIRES_SECONDS)
        except UNAVAILABLE as error:
            log.info("fetch failed: NATS unavailable", endpoint=self.target.key, error=repr(error))
            await asyncio.sleep(FETCH_RETRY_SECONDS)
            return []

    def _before_loss(self, sequence: DeliverySequence, fetched: list[Msg]) -> list[Msg]:
        """The messages that arrived before a skipped delivery (all of them when none was)."""
        for number, message in enumerate(fetched):
            lost = sequence.lost_before(message.metadata.sequence.consumer)
            if lost:
                self._report_lost(lost, held_back=len(fetched) - number)
                return fetched[:number]
        return fetched

    def _report_lost(self, lost: int, held_back: int) -> None:
        metrics.DELIVERIES_LOST.inc(lost)
        log.warning(
            "deliveries from JetStream went missing: holding this endpoint's later events back "
            "for one acknowledgement window, so they come back first and every chat stays in "
            "order",
            endpoint=self.target.key,
            missing=lost,
            seconds=ack_window(self._settings) + REDELIVERY_LAG_SECONDS,
            held_back=held_back,
        )

    async def _release_pending(self) -> None:
        """Hand back what was fetched and not finished, so the next holder gets it at once."""
        pending = list(self._pending.values())
        self._pending.clear()
        for number, message in enumerate(pending):
            try:
                await message.nak()
            except UNAVAILABLE as error:
                log.warning(
                    "events not handed back: JetStream redelivers them after the "
                    "acknowledgement window",
                    endpoint=self.target.key,
                    events=len(pending) - number,
                    error=repr(error),
                )
                return

    async def _heartbeat(self, stop: asyncio.Event) -> None:
        every = ack_window(self._settings) / HEARTBEATS_PER_WINDOW
        while not stop.is_set():
            await asyncio.sleep(every)
            if not self._holding():
                continue  # the lease may be someone else's: let JetStream take them back
            for message in list(self._pending.values()):
                try:
                    await message.in_progress()
                except UNAVAILABLE as error:
                    log.warning(
                        "events in progress not extended",
                        endpoint=self.target.key,
                        error=repr(error),
                    )
                    break

    async def _handle(self, fetched: Fetched) -> None:
        message, event = fetched
        if id(message) not in self._pending:
            return  # handed back already (lease lost or stopping)
        try:
            await self._handle_held(message, event)
        except Exception as error:
            seq = message.metadata.sequence.stream
            log.exception("webhook event not settled: offered again", seq=seq, error=repr(error))
            try:
                await message.nak(delay=UNSETTLED_RETRY_SECONDS)
            except UNAVAILABLE:
                log.warning("event left for JetStream to redeliver", seq=seq)
        finally:
            self._pending.pop(id(message), None)

    async def _handle_held(self, message: Msg, event: EventRef | Poison) -> None:
        if isinstance(event, Poison):
            await self._bury(event)
            await message.ack()
            return
        if not self.target.wants(event.event_type):
            await message.ack()
            return
        if not self._holding():
            await message.nak()  # for the relay that holds the endpoint now
            return
        consumer = self.target.consumer
        made = await self._attempts_made(event, message.metadata.num_delivered)
        if made is None:
            return  # the lease went while NATS was away: left to JetStream for the next holder
        number = made + 1
        decision = await self.sender.attempt(event, number, Trigger.SCHEDULE)
        if isinstance(decision, Delivered):
            await message.ack()
            if made:
                await self._attempts.settled(consumer, event.seq)
        elif isinstance(decision, RetryIn):
            await self._attempts.failed(consumer, event.seq, number)
            await message.nak(delay=decision.seconds)
        elif isinstance(decision, DeadLetter):
            await self._dead_letter(event, decision.reason)
            await message.ack()
            if made:
                await self._attempts.settled(consumer, event.seq)
        else:
            await self._attempts.failed(consumer, event.seq, number)
            await self._disable(event)
            await message.nak()

    async def _attempts_made(self, event: EventRef, delivered: int) -> int | None:
        """The requests made so far for a redelivered event. While NATS cannot tell, the event
        waits in its lane and so does the rest of its chat: skipping ahead would deliver the
        chat's next events first. None when the lease is lost meanwhile."""
        while True:
            try:
                return await self._attempts.made(self.target.consumer, event.seq, delivered)
            except UNAVAILABLE as error:
                if not self._holding():
                    return None
                log.info(
                    "attempt count not read: NATS away; the event's chat waits",
                    endpoint=self.target.key,
                    seq=event.seq,
                    error=repr(error),
                )
                await asyncio.sleep(FETCH_RETRY_SECONDS)

    async def _dead_letter(self, event: EventRef, reason: str) -> None:
        await self._publish_dead_letter(
            event.instance,
            event.event_type,
            event.body,
            f"{self.target.key}:{event.event_id}",
            {"Wabus-Event-Id": event.event_id, "Wabus-Event-Seq": str(event.seq)},
            reason,
        )
        log.error(
            "webhook dead-lettered",
            endpoint=self.target.key,
            event_id=event.event_id,
            instance=event.instance,
            type=event.event_type,
            reason=reason,
        )

    async def _bury(self, poison: Poison) -> None:
        """A message that is not an event goes to the dead letters at once, with the reason."""
        await self._publish_dead_letter(
            poison.instance,
            poison.event_type,
            poison.body,
            f"{self.target.key}:poison:{poison.seq}",
            {"Wabus-Event-Seq": str(poison.seq)},
            f"poison: {poison.reason}",
        )
        metrics.POISON.inc()
        log.error(
            "poison message on the events stream dead-lettered",
            endpoint=self.target.key,
            seq=poison.seq,
            reason=poison.reason,
        )

    async def _publish_dead_letter(
        self,
        instance: str,
        event_type: str,
        body: bytes,
        message_id: str,
        headers: dict[str, str],
        reason: str,
    ) -> None:
        target = self.target
        await self._js.publish(
            self._topology.dead_letter(instance, target.token, event_type),
            body,
            headers={
                "Nats-Msg-Id": message_id,
                "Wabus-Endpoint": target.key,
                **headers,
                "Wabus-Reason": _header_safe(reason),
            },
        )
        metrics.DEAD_LETTERS.inc()

    async def _disable(self, event: EventRef) -> None:
        target = self.target
        if await self._states.disabled(target.key) is not None:
            return
        await self._states.disable(target.key, "HTTP 410 Gone")
        self.lease_lost.set()  # stop fetching; the lease is released on the way out
        metrics.DISABLED.inc()
        log.error("webhook endpoint disabled: it answered 410 Gone", endpoint=target.key)
        notice = make_event(
            event.instance,
            WebhookEndpointDisabled(endpoint_id=target.key, url=target.url, status=410),
        )
        try:
            await self._js.publish(
                self._topology.event(event.instance, notice.type),
                encode(notice),
                headers={"Nats-Msg-Id": notice.id},
            )
        except UNAVAILABLE as error:  # the endpoint state above is what matters
            log.error(
                "webhook.endpoint_disabled not published: subscribers are not told",
                endpoint=target.key,
                error=repr(error),
            )


def _stream_sequence(message: Msg) -> int:
    return message.metadata.sequence.stream


def _header_safe(text: str) -> str:
    return " ".join(text.split())[:1000]
