"""The whole path with every part real and separate: nats-server, `python -m connector`,
`python -m relay`, and a webhook receiver verifying with the official `standardwebhooks` library.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from relay.client import RelayClient
from tests import connector_support as cs
from tests.conftest import API_KEY_ID, API_SECRET
from tests.processes import ready, service, stack_env
from tests.support import Receiver, eventually, running
from wabus.embedded import free_port
from wabus.settings import Settings

pytestmark = pytest.mark.e2e


@pytest.fixture
async def stack(
    settings: Settings, nc: NATS, webhook_secret: str, tmp_path: Path
) -> AsyncIterator[tuple[Receiver, str]]:
    receiver = Receiver(webhook_secret)
    async with running(receiver.app()) as receiver_url:
        relay_port, connector_port = free_port(), free_port()
        env = stack_env(
            settings,
            receiver_url,
            webhook_secret,
            WABUS_ENGINE="sim",
            WABUS_DATA_DIR=str(tmp_path / "data"),
            LOG_FORMAT="json",
        )
        with (
            service("connector", env | {"PORT": str(connector_port)}, tmp_path / "connector.log"),
            service("relay", env | {"PORT": str(relay_port)}, tmp_path / "relay.log"),
        ):
            relay_url = f"http://127.0.0.1:{relay_port}"
            try:
                await eventually(lambda: ready(relay_url), timeout=30)
                await eventually(lambda: ready(f"http://127.0.0.1:{connector_port}"), timeout=30)
                yield receiver, relay_url
            finally:
                for name in ("connector", "relay"):
                    print(f"--- {name} log ---\n" + (tmp_path / f"{name}.log").read_text())


async def test_inbound_message_to_verified_webhook_and_signed_send_back(
    stack: tuple[Receiver, str], nc: NATS, settings: Settings
) -> None:
    receiver, relay_url = stack
    await cs.create_instance(nc, settings.topology, "acme")
    await eventually(lambda: cs.state_is(nc, settings.topology, "acme", "open"), timeout=20)

    inbound = {"from": "5511999999999", "text": "olá, wabus"}
    answer = await nc.request(
        settings.topology.sim("acme", "inbound"), json.dumps(inbound).encode(), timeout=5
    )
    assert json.loads(answer.data) == {"ok": True}
    received = await receiver.wait_for(lambda e: e["type"] == "message.received", timeout=20)
    assert received["instance"] == "acme"
    assert received["data"]["text"] == "olá, wabus"
    assert received["data"]["from"] == "5511999999999@s.whatsapp.net"

    async with RelayClient(relay_url, API_KEY_ID, API_SECRET) as client:
        accepted = await client.send_text("acme", received["data"]["chat"], "hello back")
    sent = await receiver.wait_for(
        lambda e: e["type"] == "message.sent" and e["data"]["command_id"] == accepted["command_id"],
        timeout=20,
    )
    assert sent["data"]["message_id"].startswith("3EB0")
    assert sent["data"]["to"] == "5511999999999@s.whatsapp.net"
    assert receiver.rejected == []
