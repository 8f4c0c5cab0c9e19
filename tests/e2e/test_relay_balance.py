"""Relays share the webhook endpoints out: three endpoints, one relay delivering them all, a second
relay joins and takes its share (handed over cleanly: nothing lost, nothing twice, every chat in
order at every endpoint), then stops with SIGTERM and hands its share back; disabled endpoints
are left out of the shares. The relays run as `python -m relay`."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from nats.js.errors import KeyNotFoundError

from relay.client import RelayClient
from relay.delivery.states import EndpointStates
from schemas.envelope import encode, make_event
from tests.conftest import API_KEY_ID, API_SECRET
from tests.integration.test_webhook_delivery import inbound
from tests.processes import ready, service, stack_env
from tests.support import Receiver, eventually, running
from wabus.embedded import free_port
from wabus.natsbus import ensure_streams
from wabus.settings import Settings

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

INSTANCES = ("bal-a", "bal-b")
ENDPOINTS = ("global", "bal-a/hook", "bal-b/hook")
CHATS = 3
PER_PHASE = 8
"""Events per chat and instance in each of the three phases."""


async def publish_phase(nc: NATS, settings: Settings, phase: int) -> None:
    js = nc.jetstream()
    for number in range(phase * PER_PHASE, (phase + 1) * PER_PHASE):
        for instance in INSTANCES:
            for chat in range(CHATS):
                jid = f"55119000001{chat:02d}@s.whatsapp.net"
                text = f"{instance}:{chat}#{number}"
                envelope = make_event(instance, inbound(number, jid, text))
                await js.publish(
                    settings.topology.event(instance, envelope.type),
                    encode(envelope),
                    headers={"Nats-Msg-Id": envelope.id},
                )


async def holders(nc: NATS, settings: Settings) -> dict[str, str | None]:
    """Each endpoint's lease holder (None: free or released)."""
    kv = await nc.jetstream().key_value(settings.topology.webhook_leases_bucket)
    found: dict[str, str | None] = {}
    for key in ENDPOINTS:
        try:
            entry = await kv.get(key)
        except KeyNotFoundError:
            found[key] = None
            continue
        holder = json.loads(entry.value or b"{}").get("holder")
        found[key] = holder if isinstance(holder, str) else None
    return found


def held_by(found: dict[str, str | None], pid: int) -> int:
    return sum(1 for holder in found.values() if holder and f"-{pid}-" in holder)


def arrivals(receiver: Receiver) -> dict[tuple[str, str], list[int]]:
    """Per endpoint path and chat, the event numbers in the order they arrived (every arrival)."""
    order: dict[tuple[str, str], list[int]] = defaultdict(list)
    for path, (_, event) in zip(receiver.paths, receiver.deliveries, strict=True):
        chat, number = event["data"]["text"].split("#")
        order[(path, chat)].append(int(number))
    return order


SLOW = f"{INSTANCES[0]}:0#{2 * PER_PHASE - 1}"
"""The last event of the second phase in one chat: answered slowly, to every endpoint."""
SLOW_SECONDS = 3.0
"""Longer than the lease time, shorter than a stopping relay's grace (5 s) for its requests."""


def slow(event: dict[str, Any]) -> bool:
    return bool(event["data"]["text"] == SLOW)


async def slow_one_arrived(receiver: Receiver) -> bool:
    """The slow event reached the global endpoint (held by the second relay)."""
    return any(
        path == "/hook" and event["data"]["text"] == SLOW
        for path, (_, event) in zip(receiver.paths, receiver.deliveries, strict=True)
    )


EXPECTED = 3 * PER_PHASE * CHATS * len(INSTANCES) * 2
"""Three phases; the global endpoint gets every event, each instance's endpoint its own."""


async def all_arrived(receiver: Receiver) -> bool:
    return len(receiver.deliveries) >= EXPECTED


@dataclass
class Relays:
    """Relays to start against one receiver; each is stopped on the way out."""

    processes: ExitStack
    env: dict[str, str]
    log: Path
    receiver_url: str

    async def start(self) -> tuple[subprocess.Popen[bytes], str]:
        """`python -m relay` on a free port, ready; the process and its URL."""
        port = free_port()
        relay = self.processes.enter_context(
            service("relay", self.env | {"PORT": str(port)}, self.log)
        )
        url = f"http://127.0.0.1:{port}"
        await eventually(lambda: ready(url), timeout=30)
        return relay, url


@asynccontextmanager
async def relays(
    settings: Settings, nc: NATS, receiver: Receiver, webhook_secret: str, log: Path
) -> AsyncIterator[Relays]:
    """The streams, the receiver serving, and relays to start; their log printed at the end."""
    await ensure_streams(nc.jetstream(), settings)
    async with running(receiver.app()) as receiver_url:
        env = stack_env(
            settings,
            receiver_url,
            webhook_secret,
            WABUS_WEBHOOK_LEASE_TTL="2",  # hand-overs within a second; shorter than SLOW_SECONDS
            WABUS_WEBHOOK_TIMEOUT="15",  # no retry (which gives up order) on a busy machine
        )
        try:
            with ExitStack() as processes:
                yield Relays(processes, env, log, receiver_url)
        finally:
            print(log.read_text())


async def create_instances(relay_url: str, receiver_url: str, webhook_secret: str) -> None:
    """The instances, each with its own endpoint (the global one comes from the environment)."""
    async with RelayClient(relay_url, API_KEY_ID, API_SECRET) as client:
        for instance in INSTANCES:
            url = f"{receiver_url}/hook/{instance}"
            hook = {"id": "hook", "url": url, "secret": webhook_secret}
            await client.create_instance(instance, webhooks=[hook])


async def split(
    nc: NATS, settings: Settings, shares: dict[int, int]
) -> dict[str, str | None] | None:
    """The endpoints' holders when each relay (by pid) holds its number of them, else None."""
    found = await holders(nc, settings)
    return found if all(held_by(found, pid) == n for pid, n in shares.items()) else None


async def test_a_joining_relay_takes_its_share_and_a_leaving_one_hands_it_back(
    settings: Settings, nc: NATS, webhook_secret: str, tmp_path: Path
) -> None:
    receiver = Receiver(webhook_secret, delay=lambda event: SLOW_SECONDS if slow(event) else 0)
    log = tmp_path / "relays.log"
    async with relays(settings, nc, receiver, webhook_secret, log) as running_relays:
        first, first_url = await running_relays.start()
        await create_instances(first_url, running_relays.receiver_url, webhook_secret)

        async def first_holds_all() -> bool:
            return held_by(await holders(nc, settings), first.pid) == len(ENDPOINTS)

        await eventually(first_holds_all, timeout=30)
        alone = await holders(nc, settings)
        await publish_phase(nc, settings, 0)
        second, _ = await running_relays.start()

        async def shared_out() -> dict[str, str | None] | None:
            return await split(nc, settings, {first.pid: 2, second.pid: 1})

        together = await eventually(shared_out, timeout=30)
        await publish_phase(nc, settings, 1)
        # stopped while its endpoint's last answer takes longer than the lease time
        await eventually(lambda: slow_one_arrived(receiver), timeout=30)
        second.send_signal(signal.SIGTERM)
        # waited in a thread: the receiver runs in this loop and answers the relay's
        # last requests while it stops
        await asyncio.to_thread(second.wait, 30)
        await eventually(first_holds_all, timeout=30)
        await publish_phase(nc, settings, 2)
        await eventually(lambda: all_arrived(receiver), timeout=60)

    assert held_by(alone, first.pid) == 3
    assert held_by(together, second.pid) == 1  # the joining relay delivered its share
    assert f"-{second.pid}-" in (together["global"] or "")  # the last in key order moved
    logged = log.read_text()
    assert "handing a webhook endpoint over" in logged
    # the stopping relay kept its lease through the slow answer and handed the endpoint over:
    # the first relay did not have to wait out an acknowledgement window
    assert "waiting out the previous holder's acknowledgement window" not in logged
    assert receiver.rejected == []
    order = arrivals(receiver)
    paths = {path for path, _ in order}
    assert paths == {"/hook", "/hook/bal-a", "/hook/bal-b"}
    expected_numbers = list(range(3 * PER_PHASE))
    for (path, chat), numbers in order.items():
        assert numbers == expected_numbers, f"{chat} at {path} arrived as {numbers}"
    sent = Counter(
        (path, headers["webhook-id"])
        for path, (headers, _) in zip(receiver.paths, receiver.deliveries, strict=True)
    )
    twice = [delivery for delivery, count in sent.items() if count > 1]
    assert twice == []
    assert len(receiver.deliveries) == EXPECTED


async def test_disabled_endpoints_are_left_out_of_the_shares(
    settings: Settings, nc: NATS, webhook_secret: str, tmp_path: Path
) -> None:
    """The global endpoint is disabled (as a 410 Gone leaves it): two relays deliver the two
    endpoints that work, one each — a share counting the disabled one let the first relay keep
    both. Enabled again, it is claimed and its backlog delivered, in order, once."""
    receiver = Receiver(webhook_secret)
    async with relays(
        settings, nc, receiver, webhook_secret, tmp_path / "relays.log"
    ) as running_relays:
        first, first_url = await running_relays.start()
        states = await nc.jetstream().key_value(settings.topology.endpoints_bucket)
        await EndpointStates(states).disable("global", "410 Gone (the test)")
        await create_instances(first_url, running_relays.receiver_url, webhook_secret)

        async def first_holds_the_two_that_work() -> bool:
            found = await holders(nc, settings)
            return held_by(found, first.pid) == 2 and found["global"] is None

        await eventually(first_holds_the_two_that_work, timeout=30)
        second, _ = await running_relays.start()

        async def one_each() -> dict[str, str | None] | None:
            return await split(nc, settings, {first.pid: 1, second.pid: 1})

        shared = await eventually(one_each, timeout=30)
        await publish_phase(nc, settings, 0)
        half = PER_PHASE * CHATS * len(INSTANCES)

        async def instance_endpoints_served() -> bool:
            return len(receiver.deliveries) >= half

        await eventually(instance_endpoints_served, timeout=60)
        async with RelayClient(first_url, API_KEY_ID, API_SECRET) as client:
            await client.enable_endpoint("global")

        async def global_served() -> bool:
            return len(receiver.deliveries) >= 2 * half

        await eventually(global_served, timeout=60)
        enabled = await holders(nc, settings)

    assert shared["global"] is None  # disabled: nobody holds it
    assert enabled["global"] is not None  # enabled again: claimed (the positive control)
    assert receiver.rejected == []
    order = arrivals(receiver)
    assert {path for path, _ in order} == {"/hook", "/hook/bal-a", "/hook/bal-b"}
    for (path, chat), numbers in order.items():
        assert numbers == list(range(PER_PHASE)), f"{chat} at {path} arrived as {numbers}"
    assert len(receiver.deliveries) == 2 * PER_PHASE * CHATS * len(INSTANCES)
