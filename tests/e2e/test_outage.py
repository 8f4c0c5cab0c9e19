"""NATS goes away while WhatsApp keeps talking: nothing is lost, nothing is doubled, order holds.

The test runs a nats-server of its own (fixed port and store directory), stops it while the sim
engine plays 1,000 inbound messages from inside the connector, and starts it again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS
from prometheus_client import REGISTRY

from tests import connector_support as cs
from tests.support import eventually
from wabus.embedded import EmbeddedNats, free_port
from wabus.settings import Settings

pytestmark = pytest.mark.e2e

MESSAGES = 1000


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    with EmbeddedNats(tmp_path / "nats", port=free_port()) as embedded:
        yield embedded


def spooled() -> float:
    return REGISTRY.get_sample_value("wabus_connector_spooled_total") or 0.0


async def received_count(nc: NATS, settings: Settings) -> int:
    try:
        info = await nc.jetstream().stream_info(settings.topology.events_stream)
    except Exception:
        return 0
    return int(info.state.messages)


async def test_inbound_events_survive_a_nats_restart_exactly_once_in_order(
    server: EmbeddedNats, settings: Settings
) -> None:
    settings = settings.model_copy(update={"nats_url": server.url, "port": free_port()})
    topology = settings.topology
    nc = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    spooled_before = spooled()
    try:
        async with cs.connector_running(settings, nc):
            await cs.create_instance(nc, topology, "acme")
            await eventually(lambda: cs.state_is(nc, topology, "acme", "open"))
            baseline = await received_count(nc, settings)
            inbound = {"from": "5511999999999", "text": "m", "id": "OUT", "repeat": MESSAGES,
                       "interval_ms": 3}  # fmt: skip
            assert await cs.sim(nc, topology, "acme", "inbound", inbound) == {"ok": True}
            await eventually(lambda: _reached(nc, settings, baseline + 50))

            await asyncio.to_thread(server.stop)
            # Longer than the publish timeout (2 s), so the connector must spool what arrives.
            await asyncio.sleep(3.0)
            await asyncio.to_thread(server.start)

            await eventually(lambda: _reached(nc, settings, baseline + MESSAGES), timeout=60)
            await asyncio.sleep(0.5)  # a duplicate, if any, would land now
            received = await cs.events_of(nc, topology, "message.received")

            # the config watch and the command consumer came back with the server
            await cs.create_instance(nc, topology, "beta")
            await eventually(lambda: cs.state_is(nc, topology, "beta", "open"), timeout=20)
            data = {"to": "5511999999999", "text": "after the outage"}
            await cs.publish_command(nc, topology, "beta", "after-1", data)
            await eventually(lambda: cs.events_of(nc, topology, "message.sent"), timeout=20)
    finally:
        await nc.close()
    ids = [event["data"]["message_id"] for event in received]
    assert ids == [f"OUT{number:07d}" for number in range(1, MESSAGES + 1)]
    assert len({event["id"] for event in received}) == MESSAGES
    assert spooled() - spooled_before >= 100  # the outage really went through the spool


async def _reached(nc: NATS, settings: Settings, number: int) -> bool:
    return await received_count(nc, settings) >= number
