"""A delivery from JetStream that never reaches the relay (it was on its way through a NATS node
that died) must not let its chat's later events overtake it. The loss is made on one server by an
interloper taking the next delivery from the endpoint's consumer, exactly as a lost pull answer
looks to the consumer: delivered, unacknowledged, given back only after the acknowledgement
window. The relay (`python -m relay`) must notice the skipped consumer sequence, hold the
endpoint back and deliver the lost event before the ones fetched after it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from relay.delivery.records import GLOBAL_ENDPOINT
from relay.delivery.targets import Target
from relay.webhooks.signature import WebhookSecret
from tests.e2e.test_webhook_failover import first_arrivals
from tests.integration.test_webhook_delivery import publish
from tests.processes import ready, service, stack_env
from tests.support import Receiver, eventually, running
from wabus.embedded import free_port
from wabus.natsbus import ensure_streams
from wabus.settings import Settings

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BUSY, LOST = "5511900000001@s.whatsapp.net", "5511900000002@s.whatsapp.net"
IN_FLIGHT = 4
"""With one lane of concurrency the relay stops fetching at four unfinished events."""


async def test_a_delivery_lost_on_its_way_is_delivered_before_its_chats_later_events(
    settings: Settings, nc: NATS, webhook_secret: str, tmp_path: Path
) -> None:
    release = asyncio.Event()
    receiver = Receiver(
        webhook_secret,
        hold=lambda event: release if event["data"]["text"] == f"{BUSY}#0" else None,
    )
    js = nc.jetstream()
    await ensure_streams(js, settings)
    stream = settings.topology.events_stream
    consumer = Target(GLOBAL_ENDPOINT, "", WebhookSecret(webhook_secret)).consumer
    log = tmp_path / "relay.log"
    async with running(receiver.app()) as receiver_url:
        env = stack_env(
            settings,
            receiver_url,
            webhook_secret,
            WABUS_WEBHOOK_CONCURRENCY="1",
            WABUS_WEBHOOK_TIMEOUT="2",
            PORT=str(free_port()),
        )
        try:
            with service("relay", env, log):
                await eventually(lambda: ready(f"http://127.0.0.1:{env['PORT']}"), timeout=30)
                for number in range(IN_FLIGHT):
                    await publish(nc, settings, number, chat=BUSY)

                async def relay_stopped_fetching() -> bool:
                    info = await js.consumer_info(stream, consumer)
                    return bool(info.num_ack_pending == IN_FLIGHT and info.num_waiting == 0)

                await asyncio.wait_for(receiver.arrived.wait(), 30)
                await eventually(relay_stopped_fetching, timeout=30)
                for number in range(3):
                    await publish(nc, settings, number, chat=LOST)
                interloper = await js.pull_subscribe_bind(consumer, stream)
                [taken] = await interloper.fetch(1, timeout=5)
                await interloper.unsubscribe()
                assert taken.data.count(f"{LOST}#0".encode()) == 1  # the loss is the chat's first
                release.set()

                async def all_arrived() -> bool:
                    return len({h["webhook-id"] for h, _ in receiver.deliveries}) >= IN_FLIGHT + 3

                await eventually(all_arrived, timeout=60)
        finally:
            release.set()  # a held answer would keep the receiver from shutting down
            print(log.read_text())

    order = first_arrivals(receiver)
    assert order[BUSY] == list(range(IN_FLIGHT))  # fetched before the loss: delivered at once
    assert order[LOST] == [0, 1, 2], f"the chat's events overtook the lost one: {order[LOST]}"
    assert "deliveries from JetStream went missing" in log.read_text()
    assert receiver.rejected == []
