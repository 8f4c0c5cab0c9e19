"""Every webhook endpoint's dispatcher in one relay process: the global endpoint from the
environment and the per-instance endpoints of the configuration bucket, followed as it changes.

Also the operator's side of delivery: retry one event at one endpoint, and recover an endpoint's
dead letters over a time range.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta

from nats.aio.client import Client as NATS
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from relay.delivery.attempts import AttemptCounts
from relay.delivery.balance import Balance
from relay.delivery.dispatcher import EndpointDispatcher, Shared
from relay.delivery.events import EventRef, Poison, read_event
from relay.delivery.policy import Decision, Delivered
from relay.delivery.presence import RelayPresence
from relay.delivery.records import DeliveryLog, NullDeliveryLog, Trigger
from relay.delivery.states import EndpointStates
from relay.delivery.targets import Target, global_target, instance_targets
from schemas.instances import InstanceConfig
from wabus.buckets import open_bucket
from wabus.configwatch import ConfigWatch
from wabus.leases import Leases
from wabus.logs import get_logger
from wabus.natsbus import UNAVAILABLE
from wabus.settings import Settings

log = get_logger(__name__)

RECOVER_CONCURRENCY = 16
RECOVER_MAX_EVENTS = 100_000


async def open_delivery_log(settings: Settings) -> DeliveryLog:
    """The Postgres delivery log with `DATABASE_URL`; without it deliveries go on, unlogged."""
    if settings.database_url is None:
        log.warning(
            "DATABASE_URL unset: the webhook delivery log is off "
            "(webhooks are still delivered, retried and dead-lettered; "
            "GET /v1/deliveries and retrying one event need the log)"
        )
        return NullDeliveryLog()
    from relay.delivery.log import PostgresDeliveryLog

    days = settings.delivery_log_retention_days
    retention = timedelta(days=days) if days > 0 else None
    delivery_log = await PostgresDeliveryLog.open(
        settings.database_url.get_secret_value(), retention=retention
    )
    log.info("webhook delivery log on (Postgres)", retention_days=days or "forever")
    return delivery_log


class UnknownEndpoint(LookupError):
    def __init__(self, key: str) -> None:
        super().__init__(f"no webhook endpoint {key!r}")
        self.key = key


class EventGone(LookupError):
    """The event is no longer in `WA_EVENTS` (older than its retention)."""


@dataclass(frozen=True)
class Running:
    dispatcher: EndpointDispatcher
    task: asyncio.Task[None]
    stop: asyncio.Event


def holder_id() -> str:
    return f"relay-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class Deliveries:
    def __init__(self, shared: Shared, presence: RelayPresence) -> None:
        self._shared = shared
        self._presence = presence
        self._balance = shared.balance
        self._js = shared.js
        self._settings = shared.settings
        self._topology = shared.settings.topology
        self.log = shared.log
        self.states = shared.states
        self._leases = shared.leases
        self._running: dict[str, Running] = {}
        self._balance.endpoints = self._running.keys()  # a live view: always the running ones
        self._by_instance: dict[str, set[str]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._watch = ConfigWatch(self._apply, lambda: set(self._by_instance))

    @classmethod
    async def open(cls, nc: NATS, settings: Settings, delivery_log: DeliveryLog) -> Deliveries:
        js = nc.jetstream()
        topology = settings.topology
        replicas = settings.stream_replicas
        leases_kv = await open_bucket(
            js,
            topology.webhook_leases_bucket,
            "Which relay delivers to which webhook endpoint",
            ttl=settings.webhook_lease_ttl,
            replicas=replicas,
        )
        del leases_kv  # opened (created) here; `Leases` binds by name
        states_kv = await open_bucket(
            js, topology.endpoints_bucket, "Webhook endpoint state", replicas=replicas
        )
        attempts_kv = await open_bucket(
            js,
            topology.webhook_attempts_bucket,
            "Requests made for webhook events being retried",
            ttl=settings.events_max_age,
            replicas=replicas,
        )
        holder = holder_id()
        leases = Leases(js, topology.webhook_leases_bucket, holder, settings.webhook_lease_ttl)
        shared = Shared(
            nc,
            js,
            settings,
            delivery_log,
            leases,
            EndpointStates(states_kv),
            AttemptCounts(attempts_kv),
            Balance(),
        )
        return cls(shared, RelayPresence(js, topology.webhook_leases_bucket, holder))

    # running

    async def run(self, stop: asyncio.Event) -> None:
        await self._count_relays()  # before the first claim: a relay joining takes its share only
        target = global_target(self._settings)
        if target is None:
            log.warning("WABUS_WEBHOOK_URL or WABUS_WEBHOOK_SECRET unset: no global endpoint")
        else:
            self._start(target)
        stopped = asyncio.Event()
        renewals = asyncio.create_task(self._renew(stop, stopped))
        try:
            await self._watch.run(self._js, self._topology, stop)
        finally:
            await self._leave()
            for running in self._running.values():
                running.stop.set()
            # the leases are renewed until every dispatcher has finished and handed its endpoint
            # over: a drain longer than the lease time would otherwise let the lease expire, and
            # the next holder would wait a whole acknowledgement window instead of starting
            await asyncio.gather(*(r.task for r in self._running.values()))
            stopped.set()
            await renewals
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self.log.close()

    def _start(self, target: Target) -> None:
        dispatcher = EndpointDispatcher(target, self._shared)
        stop = asyncio.Event()
        task = asyncio.create_task(dispatcher.run(stop))
        self._running[target.key] = Running(dispatcher, task, stop)

    async def _stop_endpoint(self, key: str, *, forget: bool) -> None:
        running = self._running.pop(key, None)
        if running is None:
            return
        running.stop.set()
        await running.task
        self._balance.disabled.discard(key)  # its dispatcher has ended: nothing notes it again
        if forget:  # the endpoint was removed: its consumer would only pile up events
            with contextlib.suppress(NotFoundError):
                await self._js.delete_consumer(
                    self._topology.events_stream, running.dispatcher.target.consumer
                )
            log.info("webhook endpoint removed", endpoint=key)

    async def _apply(self, instance: str, config: InstanceConfig | None, _: int | None) -> None:
        wanted = {t.key: t for t in instance_targets(config)} if config else {}
        current = self._by_instance.get(instance, set())
        for key in current - set(wanted):
            await self._stop_endpoint(key, forget=True)
        for key, target in wanted.items():
            running = self._running.get(key)
            if running is None:
                self._start(target)
                log.info("webhook endpoint added", endpoint=key)
            else:
                running.dispatcher.target = target
        if wanted:
            self._by_instance[instance] = set(wanted)
        else:
            self._by_instance.pop(instance, None)

    async def _renew(self, stop: asyncio.Event, stopped: asyncio.Event) -> None:
        """Renew the leases until the dispatchers have `stopped`; share the endpoints out until
        told to `stop`."""
        while not stopped.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopped.wait(), self._leases.ttl / 3)
            if stopped.is_set():
                return
            for key in await self._leases.renew():
                running = self._running.get(key)
                if running is not None:
                    running.dispatcher.lease_lost.set()
            if not stop.is_set():
                await self._count_relays()
                self._hand_over_surplus()

    async def _count_relays(self) -> None:
        """Announce this relay and count the relays running; on failure the last count stands."""
        try:
            await self._presence.announce()
            relays = await self._presence.count()
        except UNAVAILABLE as error:
            log.info("relays not counted: NATS away", error=repr(error))
            return
        changed = relays != self._balance.relays
        self._balance.relays = max(relays, 1)
        if changed:
            log.info(
                "relays running",
                relays=relays,
                endpoints=len(self._running),
                disabled=len(self._balance.disabled),
                share=self._balance.share,
            )

    def _hand_over_surplus(self) -> None:
        held = self._leases.held & set(self._running)
        for key in self._balance.to_hand_over(held):
            dispatcher = self._running[key].dispatcher
            if not dispatcher.handing_over.is_set():
                log.info(
                    "handing a webhook endpoint over to a relay below its share",
                    endpoint=key,
                    relays=self._balance.relays,
                    share=self._balance.share,
                )
                dispatcher.handing_over.set()

    async def _leave(self) -> None:
        try:
            await self._presence.leave()
        except UNAVAILABLE as error:
            log.info("relay presence left to expire: NATS away", error=repr(error))

    # the operator's side

    def endpoint(self, key: str) -> EndpointDispatcher:
        running = self._running.get(key)
        if running is None:
            raise UnknownEndpoint(key)
        return running.dispatcher

    def endpoints(self) -> list[Target]:
        return [running.dispatcher.target for running in self._running.values()]

    async def retry(self, event_id: str, endpoint: str) -> tuple[Decision, int]:
        """Deliver one logged event to `endpoint` again, now; the decision and attempt number.
        LookupError when the log has no delivery of it there; EventGone when it expired."""
        dispatcher = self.endpoint(endpoint)
        last = await self.log.latest(event_id, endpoint)
        if last is None:
            raise LookupError(f"no delivery of {event_id!r} to {endpoint!r} is logged")
        try:
            message = await self._js.get_msg(self._topology.events_stream, last.event_seq)
        except NotFoundError as error:
            raise EventGone(f"event {event_id!r} is no longer in the events stream") from error
        event = read_event(message.subject or "", message.data or b"", last.event_seq)
        if isinstance(event, Poison) or event.event_id != event_id:
            raise EventGone(f"event {event_id!r} is no longer in the events stream")
        number = last.attempt + 1
        return await dispatcher.sender.attempt(event, number, Trigger.RETRY), number

    async def recover(self, endpoint: str, since: datetime, until: datetime) -> int:
        """Deliver again, in the background, the dead letters of `endpoint` that were
        dead-lettered in [since, until) and have not been delivered since; how many."""
        dispatcher = self.endpoint(endpoint)
        events = await self._dead_letters(dispatcher.target, since, until)
        if self.log.enabled and events:
            done = await self.log.delivered(endpoint, [e.event_id for e in events])
            events = [e for e in events if e.event_id not in done]
        task = asyncio.create_task(self._redeliver(dispatcher, events))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        log.info("recovering dead letters", endpoint=endpoint, events=len(events))
        return len(events)

    async def _dead_letters(
        self, target: Target, since: datetime, until: datetime
    ) -> list[EventRef]:
        subscription = await self._js.pull_subscribe(
            target.dead_letters_subject(self._topology),
            stream=self._topology.dlq_stream,
            config=ConsumerConfig(
                ack_policy=AckPolicy.NONE,
                deliver_policy=DeliverPolicy.BY_START_TIME,
                opt_start_time=since,
                inactive_threshold=30.0,
            ),
        )
        found: dict[str, EventRef] = {}
        try:
            while len(found) < RECOVER_MAX_EVENTS:
                try:
                    messages = await subscription.fetch(batch=512, timeout=0.5)
                except (NatsTimeoutError, TimeoutError):
                    break
                for message in messages:
                    if message.metadata.timestamp >= until:
                        return list(found.values())
                    event = _dead_letter_event(message.subject, message.data, message.headers)
                    if event is not None:
                        found.setdefault(event.event_id, event)
        finally:
            try:
                await subscription.unsubscribe()
            except UNAVAILABLE as error:
                log.info("dead-letter reader not closed", error=repr(error))
        return list(found.values())

    async def _redeliver(self, dispatcher: EndpointDispatcher, events: list[EventRef]) -> None:
        slots = asyncio.Semaphore(RECOVER_CONCURRENCY)
        delivered = 0

        async def one(event: EventRef) -> None:
            nonlocal delivered
            async with slots:
                if isinstance(
                    await dispatcher.sender.attempt(event, 0, Trigger.RECOVER), Delivered
                ):
                    delivered += 1

        outcomes = await asyncio.gather(*(one(event) for event in events), return_exceptions=True)
        for event, outcome in zip(events, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                log.error("dead letter not recovered", event_id=event.event_id, error=repr(outcome))
        log.info(
            "dead letters recovered",
            endpoint=dispatcher.target.key,
            delivered=delivered,
            failed=len(events) - delivered,
        )


def _dead_letter_event(
    subject: str, body: bytes, headers: dict[str, str] | None
) -> EventRef | None:
    """The event a dead letter (`<prefix>.dlq.<instance>.<endpoint>.<type>`) holds; None for a
    poison message, which recovery cannot deliver either."""
    parts = subject.split(".", 4)
    if len(parts) != 5:
        return None
    raw_seq = (headers or {}).get("Wabus-Event-Seq", "")
    seq = int(raw_seq) if raw_seq.isascii() and raw_seq.isdigit() else 0
    event = read_event(f"{parts[0]}.evt.{parts[2]}.{parts[4]}", body, seq)
    if isinstance(event, Poison):
        log.info("poison dead letter skipped by recovery", subject=subject, reason=event.reason)
        return None
    return event
