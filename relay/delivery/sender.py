"""Sends one endpoint's webhooks: signs an event, POSTs it with the endpoint's own connection pool,
asks the policy what the answer means, logs the attempt and queues a reply the answer asked for.

Shared by the endpoint's dispatcher (scheduled deliveries) and the operator's retry and recovery.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from nats.js import JetStreamContext

from relay.delivery import metrics
from relay.delivery.events import EventRef
from relay.delivery.http import EndpointClient, HttpError
from relay.delivery.policy import (
    DeadLetter,
    Decision,
    Delivered,
    DisableEndpoint,
    RetryIn,
    decide,
)
from relay.delivery.records import Attempt, DeliveryLog, Outcome, Trigger
from relay.delivery.targets import Target
from relay.webhooks.replies import MAX_REPLY_BYTES, RefusedReply, reply_command_id, reply_to_event
from relay.webhooks.signature import webhook_headers
from schemas.commands import SEND_COMMAND
from schemas.envelope import Envelope, encode, utc_now
from schemas.ids import is_command_id
from wabus.logs import get_logger
from wabus.settings import Settings
from wabus.ssrf import BlockedTarget

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Answer:
    status: int | None
    retry_after: str | None
    error: str | None
    body: bytes
    truncated: bool
    latency_ms: float


class EndpointSender:
    def __init__(
        self, target: Target, js: JetStreamContext, settings: Settings, delivery_log: DeliveryLog
    ) -> None:
        self.target = target
        """Replaced in place when the endpoint's configuration changes."""
        self._js = js
        self._settings = settings
        self._topology = settings.topology
        self._log = delivery_log
        self._http: EndpointClient | None = None
        self._retired: list[EndpointClient] = []

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

    async def close(self) -> None:
        """Close every connection this sender opened."""
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


_OUTCOMES: dict[type, Outcome] = {
    Delivered: Outcome.DELIVERED,
    RetryIn: Outcome.RETRYING,
    DeadLetter: Outcome.DEAD,
    DisableEndpoint: Outcome.DISABLED,
}
