"""SIGKILL the relay that holds the endpoint's lease while a slow receiver (a Next.js route doing an
AI step) works through a backlog: the standby relay takes over, every chat's events still arrive in
sequence by first arrival, and none is missing. Both relays run as `python -m relay`."""

from __future__ import annotations

import json
import signal
from collections import defaultdict
from contextlib import ExitStack
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS
from nats.js.errors import KeyNotFoundError

from schemas.envelope import encode, make_event
from tests.integration.test_webhook_delivery import inbound
from tests.processes import ready, service, stack_env
from tests.support import Receiver, eventually, running
from wabus.embedded import free_port
from wabus.natsbus import ensure_streams
from wabus.settings import Settings

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CHATS = 6
PER_CHAT = 16
SLOW_SECONDS = 0.2


async def publish_numbers(nc: NATS, settings: Settings, numbers: range) -> None:
    js = nc.jetstream()
    for number in numbers:
        for chat in range(CHATS):
            jid = f"55119000000{chat:02d}@s.whatsapp.net"
            envelope = make_event("acme", inbound(number, jid, f"{jid}#{number}"))
            await js.publish(
                settings.topology.event("acme", envelope.type),
                encode(envelope),
                headers={"Nats-Msg-Id": envelope.id},
            )


async def lease_holder(nc: NATS, settings: Settings) -> str | None:
    kv = await nc.jetstream().key_value(settings.topology.webhook_leases_bucket)
    try:
        entry = await kv.get("global")
    except KeyNotFoundError:  # not claimed yet
        return None
    holder = json.loads(entry.value or b"{}").get("holder")
    return holder if isinstance(holder, str) else None


def first_arrivals(receiver: Receiver) -> dict[str, list[int]]:
    """Per chat, the event numbers in the order each event first arrived."""
    seen: set[str] = set()
    order: dict[str, list[int]] = defaultdict(list)
    for headers, event in receiver.deliveries:
        if headers["webhook-id"] in seen:
            continue
        seen.add(headers["webhook-id"])
        chat, number = event["data"]["text"].split("#")
        order[chat].append(int(number))
    return order


async def all_arrived(receiver: Receiver) -> bool:
    return len({headers["webhook-id"] for headers, _ in receiver.deliveries}) >= CHATS * PER_CHAT


async def arrived_at_least(receiver: Receiver, count: int) -> bool:
    return len(receiver.deliveries) >= count


async def test_sigkill_of_the_lease_holder_keeps_every_chat_in_order_and_loses_nothing(
    settings: Settings, nc: NATS, webhook_secret: str, tmp_path: Path
) -> None:
    receiver = Receiver(webhook_secret, delay=lambda event: SLOW_SECONDS)
    await ensure_streams(nc.jetstream(), settings)
    log = tmp_path / "relays.log"
    async with running(receiver.app()) as receiver_url:
        env = stack_env(
            settings,
            receiver_url,
            webhook_secret,
            WABUS_WEBHOOK_LEASE_TTL="2",
            WABUS_WEBHOOK_TIMEOUT="2",
        )
        ports = [free_port(), free_port()]
        try:
            with ExitStack() as processes:
                relays = [
                    processes.enter_context(service("relay", env | {"PORT": str(port)}, log))
                    for port in ports
                ]
                for port in ports:
                    await eventually(lambda p=port: ready(f"http://127.0.0.1:{p}"), timeout=30)  # type: ignore[misc]
                await publish_numbers(nc, settings, range(PER_CHAT // 2))
                holder = await eventually(lambda: lease_holder(nc, settings))
                await eventually(lambda: arrived_at_least(receiver, CHATS * 2), timeout=30)
                [victim] = [r for r in relays if f"-{r.pid}-" in holder]
                victim.send_signal(signal.SIGKILL)
                victim.wait()
                arrived_at_kill = len(receiver.deliveries)
                # later events of every chat, published after the holder died: the new holder
                # must not deliver them before what the old one had fetched and not finished
                await publish_numbers(nc, settings, range(PER_CHAT // 2, PER_CHAT))
                await eventually(lambda: all_arrived(receiver), timeout=90)
        finally:
            print(log.read_text())

    assert arrived_at_kill < CHATS * PER_CHAT // 2  # the kill left fetched events unfinished
    assert receiver.rejected == []
    order = first_arrivals(receiver)
    assert len(order) == CHATS
    for chat, numbers in order.items():
        assert numbers == list(range(PER_CHAT)), f"{chat} arrived as {numbers}"
    duplicates = len(receiver.deliveries) - CHATS * PER_CHAT
    assert duplicates <= CHATS, "more than the events in flight at the kill came twice"
