"""Pulls `WA_EVENTS` through a durable consumer shared by every relay replica and posts each event,
signed, to the webhook endpoint. 2xx acks; anything else naks with the schedule's next delay; an
event out of attempts goes to `WA_DLQ`.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from relay.webhooks.replies import MAX_REPLY_BYTES, reply_command_id, reply_to_event
from relay.webhooks.signature import WebhookSecret, webhook_headers
from schemas.commands import SEND_COMMAND
from schemas.envelope import Envelope, encode, utc_now
from wabus.logs import get_logger
from wabus.settings import Settings

log = get_logger(__name__)

CONSUMER = "relay-webhooks"
REQUEST_TIMEOUT_SECONDS = 15.0


def next_delay(schedule: tuple[float, ...], attempt: int) -> float | None:
    """Seconds to wait after failed attempt `attempt` (1-based); None when out of attempts."""
    return schedule[attempt] if attempt < len(schedule) else None


class WebhookWorker:
    def __init__(
        self, js: JetStreamContext, settings: Settings, url: str, secret: WebhookSecret
    ) -> None:
        self._js = js
        self._settings = settings
        self._url = url
        self._secrets = [secret]
        self._topology = settings.topology

    async def run(self, stop: asyncio.Event) -> None:
        subscription = await self._js.pull_subscribe(
            self._topology.all_events,
            durable=CONSUMER,
            stream=self._topology.events_stream,
            config=ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                ack_wait=REQUEST_TIMEOUT_SECONDS * 2,
                max_ack_pending=2048,
            ),
        )
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS)
        connector = aiohttp.TCPConnector(limit=256)
        log.info("delivering webhooks", url=self._url, stream=self._topology.events_stream)
        try:
            async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
                while not stop.is_set():
                    try:
                        messages = await subscription.fetch(batch=256, timeout=1.0)
                    except (NatsTimeoutError, TimeoutError):
                        continue
                    except Exception as error:
                        log.warning("event fetch failed", error=repr(error))
                        await asyncio.sleep(1.0)
                        continue
                    await asyncio.gather(*(self._deliver(http, message) for message in messages))
        finally:
            # A pull subscription left open makes the connection's drain wait for its timeout.
            await subscription.unsubscribe()

    async def _deliver(self, http: aiohttp.ClientSession, message: Msg) -> None:
        event_id = (message.headers or {}).get("Nats-Msg-Id") or json.loads(message.data)["id"]
        attempt = message.metadata.num_delivered
        headers = webhook_headers(self._secrets, event_id, int(time.time()), message.data)
        status: int | None = None
        error: str | None = None
        answer = b""
        try:
            async with http.post(
                self._url, data=message.data, headers=headers, allow_redirects=False
            ) as response:
                status = response.status
                answer = await response.content.read(MAX_REPLY_BYTES)
        except (aiohttp.ClientError, TimeoutError) as failure:
            error = type(failure).__name__
        if status is not None and 200 <= status < 300:
            if answer and message.subject.endswith(".message.received"):
                await self._send_reply(event_id, message.data, answer)
            await message.ack()
            return
        delay = next_delay(self._settings.webhook_retry_schedule, attempt)
        log.warning(
            "webhook delivery failed",
            event_id=event_id,
            attempt=attempt,
            status=status,
            error=error,
            retry_in=delay,
        )
        if delay is None:
            await self._dead_letter(message, event_id, status, error)
            await message.ack()
        else:
            await message.nak(delay=delay)

    async def _send_reply(self, event_id: str, event_body: bytes, answer: bytes) -> None:
        event = json.loads(event_body)
        request = reply_to_event(event, answer)
        if request is None:
            return
        command_id = reply_command_id(event_id)
        envelope = Envelope[dict[str, Any]](
            id=command_id,
            type=SEND_COMMAND,
            instance=event["instance"],
            timestamp=utc_now(),
            data=request.model_dump(mode="json"),
        )
        await self._js.publish(
            self._topology.command(event["instance"], SEND_COMMAND),
            encode(envelope),
            headers={"Nats-Msg-Id": command_id},
        )
        log.info("webhook reply queued", event_id=event_id, command_id=command_id)

    async def _dead_letter(
        self, message: Msg, event_id: str, status: int | None, error: str | None
    ) -> None:
        _, _, instance, event_type = message.subject.split(".", 3)
        await self._js.publish(
            self._topology.dead_letter(instance, event_type),
            message.data,
            headers={
                "Nats-Msg-Id": event_id,
                "Wabus-Endpoint": self._url,
                "Wabus-Last-Status": str(status or ""),
                "Wabus-Last-Error": error or "",
            },
        )
        log.error("webhook dead-lettered", event_id=event_id, instance=instance, type=event_type)
