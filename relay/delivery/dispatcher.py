"""Delivers one endpoint's events: its own durable consumer on `WA_EVENTS`, its own HTTP
connection pool and its own per-chat lanes, so a slow or dead endpoint delays nobody else.

One relay at a time holds an endpoint's lease and delivers for it; that is what keeps each chat's
events in publish order when several relay replicas run. The others stand by and take over when
the lease expires. Every attempt goes through `policy.decide`; this module only gathers its inputs
and applies the decision: ack, nak with the delay, dead-letter, or disable the endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from relay.delivery import metrics
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
from relay.webhooks.replies import MAX_REPLY_BYTES, reply_command_id, reply_to_event
from relay.webhooks.signature import webhook_headers
from schemas.commands import SEND_COMMAND
from schemas.envelope import Envelope, encode, make_event, utc_now
from schemas.events import WebhookEndpointDisabled
from schemas.subjects import parse_subject
from wabus.leases import Leases
from wabus.logs import get_logger
from wabus.settings import Settings
from wabus.ssrf import BlockedTarget

log = get_logger(__name__)

ACK_WAIT_SECONDS = 90.0
"""Longer than the longest request (`WABUS_WEBHOOK_TIMEOUT` ≤ 60 s)."""
HEARTBEAT_SECONDS = 20.0
"""Messages waiting in a lane are marked in progress this often, so a slow endpoint's backlog is
never redelivered behind the dispatcher's back."""
FETCH_BATCH = 256
STATE_CHECK_SECONDS = 2.0
STOP_GRACE_SECONDS = 5.0


@dataclass(frozen=True)
class EventRef:
    """An event as the dispatcher handles it: its bytes and where it came from."""

    body: bytes
    event_id: str
    seq: int
    instance: str
    event_type: str


@dataclass(frozen=True)
class Answer:
    status: int | None
    retry_after: str | None
    error: str | None
    body: bytes
    latency_ms: float


def event_ref(message: Msg) -> EventRef:
    _, instance, event_type = parse_subject(message.subject)
    headers = message.headers or {}
    event_id = headers.get("Nats-Msg-Id") or json.loads(message.data)["id"]
    return EventRef(message.data, event_id, message.metadata.sequence.stream, instance, event_type)


def lane_of(message: Msg) -> tuple[str, str | None]:
    """Events of one chat share a lane; events without a chat share their instance's lane."""
    event = json.loads(message.data)
    data = event.get("data")
    chat = data.get("chat") if isinstance(data, dict) else None
    return event.get("instance", ""), chat if isinstance(chat, str) else None


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
        self.lease_lost = asyncio.Event()
        self._http: EndpointClient | None = None
        self._pending: dict[int, Msg] = {}
        """Fetched and not finished, by `id()` (messages are not hashable)."""

    # the HTTP side, shared by scheduled deliveries and operator retries

    def _client(self) -> EndpointClient:
        target = self.target
        if self._http is None or self._http.url != target.url:
            if self._http is not None:
                self._http.close()
            self._http = EndpointClient(
                target.url,
                allow=self._settings.webhook_allow_cidrs,
                limit=self._settings.webhook_concurrency,
                timeout=self._settings.webhook_timeout,
                max_body=MAX_REPLY_BYTES,
            )
        return self._http

    async def _post(self, event: EventRef) -> Answer:
        target = self.target
        now = utc_now()
        timestamp = int(now.timestamp())
        headers = webhook_headers(target.secrets(now), event.event_id, timestamp, event.body)
        started = time.perf_counter()
        status: int | None = None
        retry_after: str | None = None
        error: str | None = None
        body = b""
        try:
            answer = await self._client().post(event.body, headers)
            status, retry_after, body = answer.status, answer.retry_after, answer.body
        except BlockedTarget as blocked:
            error = f"refused: {blocked.reason}"
        except TimeoutError:
            error = f"timeout after {self._settings.webhook_timeout:g}s"
        except HttpError as failure:
            error = str(failure)
        latency = time.perf_counter() - started
        metrics.LATENCY.observe(latency)
        return Answer(status, retry_after, error, body, latency * 1000)

    async def attempt(self, event: EventRef, number: int, trigger: Trigger) -> Decision:
        """Post `event` once, record the attempt, queue a webhook reply; the policy's decision.

        An operator's retry counts as the last attempt of the schedule: a failure leaves the
        event where it was (dead-lettered or logged) instead of starting a new schedule.
        """
        answer = await self._post(event)
        schedule = self._settings.webhook_retry_schedule
        now = utc_now()
        decision = decide(
            number if trigger is Trigger.SCHEDULE else len(schedule),
            answer.status,
            schedule,
            error=answer.error,
            retry_after=answer.retry_after,
            now=now,
        )
        if (
            isinstance(decision, Delivered)
            and answer.body
            and event.event_type == "message.received"
        ):
            await self._reply(event, answer.body)
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
                error=answer.error,
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
        return decision

    async def _reply(self, event: EventRef, answer: bytes) -> None:
        """A webhook answer asking for a reply becomes a send command whose id derives from the
        event id: a redelivered event produces the same command, which JetStream drops."""
        request = reply_to_event(json.loads(event.body), answer) if answer else None
        if request is None:
            return
        command_id = reply_command_id(event.event_id)
        envelope = Envelope[dict[str, Any]](
            id=command_id,
            type=SEND_COMMAND,
            instance=event.instance,
            timestamp=utc_now(),
            data=request.model_dump(mode="json"),
        )
        await self._js.publish(
            self._topology.command(event.instance, SEND_COMMAND),
            encode(envelope),
            headers={"Nats-Msg-Id": command_id},
        )
        log.info("webhook reply queued", event_id=event.event_id, command_id=command_id)

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
            except Exception as error:  # NATS trouble: log, wait, start over
                log.warning("endpoint dispatcher restarting", endpoint=key, error=repr(error))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._leases.ttl / 3)
        if self._http is not None:
            self._http.close()
        log.info("endpoint dispatcher stopped", endpoint=key)

    def _consumer_config(self) -> ConsumerConfig:
        target = self.target
        config = ConsumerConfig(
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=ACK_WAIT_SECONDS,
            max_ack_pending=20_000,
            description=f"wabus webhooks for {target.key}",
            deliver_policy=DeliverPolicy.ALL,
        )
        if target.start is not None:
            config.deliver_policy = DeliverPolicy.BY_START_TIME
            config.opt_start_time = target.start
        return config

    async def _deliver_while_held(self, stop: asyncio.Event) -> None:
        key = self.target.key
        subscription = await self._js.pull_subscribe(
            self.target.events_subject(self._topology),
            durable=self.target.consumer,
            stream=self._topology.events_stream,
            config=self._consumer_config(),
        )
        heartbeat = asyncio.create_task(self._heartbeat(stop))
        log.info("delivering webhooks", endpoint=key, consumer=self.target.consumer)
        checked = time.monotonic()
        concurrency = self._settings.webhook_concurrency
        try:
            async with ChatLanes[Msg](self._handle, concurrency) as lanes:
                while not stop.is_set() and not self.lease_lost.is_set():
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
                        lanes.submit(lane_of(message), message)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lanes.drain(), STOP_GRACE_SECONDS)
        finally:  # what is still in a lane now goes back to JetStream for the next holder
            heartbeat.cancel()
            await self._release_pending()
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    async def _release_pending(self) -> None:
        """Hand back what was fetched and not finished, so the next holder gets it at once."""
        for message in list(self._pending.values()):
            with contextlib.suppress(Exception):
                await message.nak()
        self._pending.clear()

    async def _heartbeat(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(HEARTBEAT_SECONDS)
            for message in list(self._pending.values()):
                with contextlib.suppress(Exception):
                    await message.in_progress()

    async def _handle(self, message: Msg) -> None:
        if id(message) not in self._pending:
            return  # handed back already (lease lost or stopping)
        try:
            await self._handle_held(message)
        finally:
            self._pending.pop(id(message), None)

    async def _handle_held(self, message: Msg) -> None:
        event = event_ref(message)
        if not self.target.wants(event.event_type):
            await message.ack()
            return
        if self.lease_lost.is_set():
            await message.nak()  # for the relay that holds the endpoint now
            return
        decision = await self.attempt(event, message.metadata.num_delivered, Trigger.SCHEDULE)
        if isinstance(decision, Delivered):
            await message.ack()
        elif isinstance(decision, RetryIn):
            await message.nak(delay=decision.seconds)
        elif isinstance(decision, DeadLetter):
            await self._dead_letter(event, decision.reason)
            await message.ack()
        else:
            await self._disable(event)
            await message.nak()

    async def _dead_letter(self, event: EventRef, reason: str) -> None:
        target = self.target
        await self._js.publish(
            self._topology.dead_letter(event.instance, target.token, event.event_type),
            event.body,
            headers={
                "Nats-Msg-Id": f"{target.key}:{event.event_id}",
                "Wabus-Endpoint": target.key,
                "Wabus-Event-Id": event.event_id,
                "Wabus-Event-Seq": str(event.seq),
                "Wabus-Reason": reason,
            },
        )
        metrics.DEAD_LETTERS.inc()
        log.error(
            "webhook dead-lettered",
            endpoint=target.key,
            event_id=event.event_id,
            instance=event.instance,
            type=event.event_type,
            reason=reason,
        )

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
        with contextlib.suppress(Exception):  # the endpoint state is what matters
            await self._js.publish(
                self._topology.event(event.instance, notice.type),
                encode(notice),
                headers={"Nats-Msg-Id": notice.id},
            )


_OUTCOMES: dict[type, Outcome] = {
    Delivered: Outcome.DELIVERED,
    RetryIn: Outcome.RETRYING,
    DeadLetter: Outcome.DEAD,
    DisableEndpoint: Outcome.DISABLED,
}
