"""Delivers one endpoint's events: its own durable consumer on `WA_EVENTS`, its own HTTP
connection pool and its own per-chat lanes, so a slow or dead endpoint delays nobody else.

One relay at a time holds an endpoint's lease and delivers for it; that is what keeps each chat's
events in publish order when several relay replicas run. The others stand by and take over when
the lease expires. Every attempt goes through `policy.decide`; this module only gathers its inputs
and applies the decision: ack, nak with the delay, dead-letter, or disable the endpoint.

Order across a takeover (docs/webhooks.md, "Ordering"): a holder starts a request only while it
is sure of its lease (`Leases.holds`), and keeps the events waiting in its lanes from being
redelivered with heartbeats. A relay that takes an endpoint over from a holder that vanished,
rather than handed it back, waits one acknowledgement window before fetching: by then every
request the old holder started has ended, and JetStream redelivers everything it held — first,
and in stream order — so no chat's later event overtakes an earlier one.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from relay.delivery import metrics
from relay.delivery.attempts import AttemptCounts
from relay.delivery.events import EventRef, Poison, read_event
from relay.delivery.http import EndpointClient, HttpError
from relay.delivery.lanes import ChatLanes
from relay.delivery.policy import (
    DeadLetter,
    Decision,
    Delivered,
    DisableEndpoint,
    RetryIn,
    decide,
)
from relay.delivery.records import Attempt, DeliveryLog, Outcome, Trigger
from relay.delivery.states import EndpointStates
from relay.delivery.targets import Target
from relay.webhooks.replies import MAX_REPLY_BYTES, RefusedReply, reply_command_id, reply_to_event
from relay.webhooks.signature import webhook_headers
from schemas.commands import SEND_COMMAND
from schemas.envelope import Envelope, encode, make_event, utc_now
from schemas.events import WebhookEndpointDisabled
from schemas.ids import is_command_id
from wabus.leases import Leases
from wabus.logs import get_logger
from wabus.natsbus import UNAVAILABLE
from wabus.settings import Settings
from wabus.ssrf import BlockedTarget

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
STOP_GRACE_SECONDS = 5.0
POISON_LANE = ("", "poison")


def ack_window(settings: Settings) -> float:
    """Seconds JetStream waits for an event's acknowledgement before giving it to another relay."""
    return settings.webhook_timeout + ACK_MARGIN_SECONDS


@dataclass(frozen=True, slots=True)
class Answer:
    status: int | None
    retry_after: str | None
    error: str | None
    body: bytes
    truncated: bool
    latency_ms: float


@dataclass(frozen=True)
class Shared:
    """What every endpoint's dispatcher in one relay process works with."""

    js: JetStreamContext
    settings: Settings
    log: DeliveryLog
    leases: Leases
    """Which relay delivers for which endpoint."""
    states: EndpointStates
    """Which endpoints are disabled."""
    attempts: AttemptCounts
    """How many requests each event being retried has had."""


Fetched = tuple[Msg, EventRef | Poison]


class EndpointDispatcher:
    def __init__(self, target: Target, shared: Shared) -> None:
        self.target = target
        """Replaced in place when the endpoint's configuration changes."""
        self._js = shared.js
        self._settings = shared.settings
        self._topology = shared.settings.topology
        self._log = shared.log
        self._leases = shared.leases
        self._states = shared.states
        self._attempts = shared.attempts
        self.lease_lost = asyncio.Event()
        self._http: EndpointClient | None = None
        self._retired: list[EndpointClient] = []
        self._pending: dict[int, Msg] = {}
        """Fetched and not finished, by `id()` (messages are not hashable)."""

    # the HTTP side, shared by scheduled deliveries and operator retries

    def _client(self) -> EndpointClient:
        target = self.target
        if self._http is None or self._http.url != target.url:
            if self._http is not None:
                self._retired.append(self._http)  # closed when the dispatcher stops
            self._http = EndpointClient(
                target.url,
                allow=self._settings.webhook_allow_cidrs,
                limit=self._settings.webhook_concurrency,
                timeout=self._settings.webhook_timeout,
                max_body=MAX_REPLY_BYTES,
            )
        return self._http

    async def _close_clients(self) -> None:
        clients = [*self._retired, *([self._http] if self._http else [])]
        self._http, self._retired = None, []
        for client in clients:
            await client.close()

    async def _post(self, event: EventRef, now: datetime) -> Answer:
        target = self.target
        timestamp = int(now.timestamp())
        headers = webhook_headers(target.secrets(now), event.event_id, timestamp, event.body)
        started = time.perf_counter()
        status: int | None = None
        retry_after: str | None = None
        error: str | None = None
        body = b""
        truncated = False
        try:
            answer = await self._client().post(event.body, headers)
            status, retry_after, body = answer.status, answer.retry_after, answer.body
            truncated = answer.truncated
        except BlockedTarget as blocked:
            error = f"refused: {blocked.reason}"
        except TimeoutError:
            error = f"timeout after {self._settings.webhook_timeout:g}s"
        except HttpError as failure:
            error = str(failure)
        latency = time.perf_counter() - started
        metrics.LATENCY.observe(latency)
        return Answer(status, retry_after, error, body, truncated, latency * 1000)

    async def attempt(self, event: EventRef, number: int, trigger: Trigger) -> Decision:
        """Post `event` once, record the attempt, queue a webhook reply; the policy's decision.

        An operator's retry counts as the last attempt of the schedule: a failure leaves the
        event where it was (dead-lettered or logged) instead of starting a new schedule.
        """
        now = utc_now()
        answer = await self._post(event, now)
        schedule = self._settings.webhook_retry_schedule
        decision = decide(
            number if trigger is Trigger.SCHEDULE else len(schedule),
            answer.status,
            schedule,
            error=answer.error,
            retry_after=answer.retry_after,
            now=now,
        )
        note = answer.error
        request: Envelope[dict[str, Any]] | None = None
        if isinstance(decision, Delivered) and event.event_type == "message.received":
            try:
                request = self._reply_command(event, answer)
            except RefusedReply as refused:
                note = f"reply refused: {refused}"
                metrics.REPLIES_REFUSED.inc()
                log.warning(
                    "webhook reply refused",
                    endpoint=self.target.key,
                    event_id=event.event_id,
                    reason=str(refused),
                )
        elif answer.truncated:
            log.info(
                "webhook answer over the limit: the rest was not read",
                endpoint=self.target.key,
                event_id=event.event_id,
                limit=MAX_REPLY_BYTES,
            )
        outcome = _OUTCOMES[type(decision)]
        metrics.ATTEMPTS_BY_OUTCOME[outcome].inc()
        await self._log.record(
            Attempt(
                event_id=event.event_id,
                event_seq=event.seq,
                instance=event.instance,
                event_type=event.event_type,
                endpoint=self.target.key,
                attempt=number,
                outcome=outcome,
                status_code=answer.status,
                latency_ms=answer.latency_ms,
                error=note,
                next_attempt_at=now + timedelta(seconds=decision.seconds)
                if isinstance(decision, RetryIn)
                else None,
                at=now,
                trigger=trigger,
            )
        )
        if not isinstance(decision, Delivered):
            log.warning(
                "webhook delivery failed",
                endpoint=self.target.key,
                event_id=event.event_id,
                instance=event.instance,
                attempt=number,
                status=answer.status,
                error=answer.error,
                outcome=outcome.value,
                retry_in=round(decision.seconds, 3) if isinstance(decision, RetryIn) else None,
            )
        if request is not None:
            await self._queue_reply(event, request)
        return decision

    def _reply_command(self, event: EventRef, answer: Answer) -> Envelope[dict[str, Any]] | None:
        """The send command a webhook answer asks for; RefusedReply when it asks for one that
        cannot be sent. Its id derives from the event id: a redelivered event produces the same
        command, which JetStream drops."""
        if not answer.body:
            return None
        if answer.truncated:
            raise RefusedReply(f"answer over {MAX_REPLY_BYTES // 1024} KiB")
        request = reply_to_event(event.event_type, event.data, answer.body)
        if request is None:
            return None
        command_id = reply_command_id(event.event_id)
        if not is_command_id(command_id):
            raise RefusedReply(f"the event id makes no valid command id: {command_id!r}")
        return Envelope[dict[str, Any]](
            id=command_id,
            type=SEND_COMMAND,
            instance=event.instance,
            timestamp=utc_now(),
            data=request.model_dump(mode="json"),
        )

    async def _queue_reply(self, event: EventRef, command: Envelope[dict[str, Any]]) -> None:
        await self._js.publish(
            self._topology.command(event.instance, SEND_COMMAND),
            encode(command),
            headers={"Nats-Msg-Id": command.id},
        )
        log.info("webhook reply queued", event_id=event.event_id, command_id=command.id)

    # the JetStream side

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver while this relay holds the endpoint's lease; stand by otherwise."""
        key = self.target.key
        while not stop.is_set():
            try:
                if await self._states.disabled(key) is None and await self._leases.acquire(key):
                    self.lease_lost.clear()
                    metrics.ENDPOINTS_HELD.inc()
                    try:
                        await self._deliver_while_held(stop)
                    finally:
                        metrics.ENDPOINTS_HELD.dec()
                        await self._leases.release(key)
            except UNAVAILABLE as error:
                log.warning("endpoint dispatcher restarting", endpoint=key, error=repr(error))
            except Exception:
                log.exception("endpoint dispatcher failed: restarting", endpoint=key)
            try:
                await asyncio.wait_for(stop.wait(), self._leases.ttl / 3)
            except TimeoutError:
                continue
        await self._close_clients()
        log.info("endpoint dispatcher stopped", endpoint=key)

    def _consumer_config(self) -> ConsumerConfig:
        target = self.target
        config = ConsumerConfig(
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=ack_window(self._settings),
            max_ack_pending=20_000,
            description=f"wabus webhooks for {target.key}",
            deliver_policy=DeliverPolicy.ALL,
        )
        if target.start is not None:
            config.deliver_policy = DeliverPolicy.BY_START_TIME
            config.opt_start_time = target.start
        return config

    async def _bind(self) -> JetStreamContext.PullSubscription:
        """The endpoint's durable consumer, its acknowledgement window brought up to date."""
        stream, consumer = self._topology.events_stream, self.target.consumer
        wanted = self._consumer_config()
        try:
            info = await self._js.consumer_info(stream, consumer)
        except NotFoundError:
            pass
        else:
            if abs((info.config.ack_wait or 0) - (wanted.ack_wait or 0)) > 0.001:
                await self._js.add_consumer(stream, replace(info.config, ack_wait=wanted.ack_wait))
                log.info("webhook consumer's acknowledgement window updated", consumer=consumer)
        return await self._js.pull_subscribe(
            self.target.events_subject(self._topology),
            durable=consumer,
            stream=stream,
            config=wanted,
        )

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
        deadline = time.monotonic() + window
        while not stop.is_set() and not self.lease_lost.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                await asyncio.wait_for(stop.wait(), min(left, 0.5))
            except TimeoutError:
                continue

    def _holding(self) -> bool:
        return not self.lease_lost.is_set() and self._leases.holds(self.target.key)

    async def _deliver_while_held(self, stop: asyncio.Event) -> None:
        key = self.target.key
        subscription = await self._bind()
        heartbeat: asyncio.Task[None] | None = None
        try:
            await self._await_previous_holder(stop)
            heartbeat = asyncio.create_task(self._heartbeat(stop))
            log.info("delivering webhooks", endpoint=key, consumer=self.target.consumer)
            checked = time.monotonic()
            concurrency = self._settings.webhook_concurrency
            async with ChatLanes[Fetched](self._handle, concurrency) as lanes:
                while not stop.is_set() and self._holding():
                    if time.monotonic() - checked > STATE_CHECK_SECONDS:
                        checked = time.monotonic()
                        if await self._states.disabled(key) is not None:
                            log.warning("endpoint disabled: delivery paused", endpoint=key)
                            break
                    await lanes.wait_below(concurrency * 4)
                    try:
                        messages = await subscription.fetch(batch=FETCH_BATCH, timeout=0.5)
                    except (NatsTimeoutError, TimeoutError):
                        continue
                    for message in messages:
                        self._pending[id(message)] = message
                        read = read_event(
                            message.subject, message.data, message.metadata.sequence.stream
                        )
                        lane = POISON_LANE if isinstance(read, Poison) else read.lane
                        lanes.submit(lane, (message, read))
                try:
                    await asyncio.wait_for(lanes.drain(), STOP_GRACE_SECONDS)
                except TimeoutError:
                    log.info("stopping with events in flight: handed back", endpoint=key)
        finally:  # what is still in a lane now goes back to JetStream for the next holder
            if heartbeat is not None:
                heartbeat.cancel()
            await self._release_pending()
            try:
                await subscription.unsubscribe()
            except UNAVAILABLE as error:
                log.info("consumer subscription not closed", endpoint=key, error=repr(error))

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
        made = await self._attempts.made(consumer, event.seq, message.metadata.num_delivered)
        number = made + 1
        decision = await self.attempt(event, number, Trigger.SCHEDULE)
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


def _header_safe(text: str) -> str:
    return " ".join(text.split())[:1000]


_OUTCOMES: dict[type, Outcome] = {
    Delivered: Outcome.DELIVERED,
    RetryIn: Outcome.RETRYING,
    DeadLetter: Outcome.DEAD,
    DisableEndpoint: Outcome.DISABLED,
}
