"""Contacts, LIDs, groups, presence and calls through the signed API: `python -m relay` asks,
`python -m connector` on the sim engine answers, events come back as verified webhooks; with the
connector away the relay answers `504` instead of hanging, and a stopped instance `409`."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from relay.client import RelayClient, RelayError
from schemas.instances import CallPolicy
from tests import connector_support as cs
from tests.conftest import API_KEY_ID, API_SECRET
from tests.processes import ready, service, stack_env
from tests.support import Receiver, eventually, running
from wabus.embedded import free_port
from wabus.settings import Settings

pytestmark = pytest.mark.e2e

ANA, BO = "5511922220001", "5511922220002"
ANA_LID = "77665544332211@lid"
QUERY_TIMEOUT = 3


@dataclass
class Stack:
    receiver: Receiver
    relay_url: str
    connector: Any


@pytest.fixture
async def stack(
    settings: Settings, nc: NATS, webhook_secret: str, tmp_path: Path
) -> AsyncIterator[Stack]:
    receiver = Receiver(webhook_secret)
    async with running(receiver.app()) as receiver_url:
        env = stack_env(
            settings,
            receiver_url,
            webhook_secret,
            WABUS_ENGINE="sim",
            WABUS_DATA_DIR=str(tmp_path / "data"),
            WABUS_QUERY_TIMEOUT=str(QUERY_TIMEOUT),
        )
        relay_port, connector_port = free_port(), free_port()
        logs = {name: tmp_path / f"{name}.log" for name in ("connector", "relay")}
        try:
            with (
                service("relay", env | {"PORT": str(relay_port)}, logs["relay"]),
                service("connector", env | {"PORT": str(connector_port)}, logs["connector"]) as c,
            ):
                relay_url = f"http://127.0.0.1:{relay_port}"
                await eventually(lambda: ready(relay_url), timeout=30)
                await eventually(lambda: ready(f"http://127.0.0.1:{connector_port}"), timeout=30)
                policy = CallPolicy(reject=True, message="Calls are not answered here.")
                await cs.create_instance(nc, settings.topology, "acme", calls=policy)
                await eventually(
                    lambda: cs.state_is(nc, settings.topology, "acme", "open"), timeout=20
                )
                contacts = [{"phone": ANA, "lid": ANA_LID, "name": "Ana"}, {"phone": BO}]
                await cs.sim(nc, settings.topology, "acme", "contacts", {"contacts": contacts})
                yield Stack(receiver, relay_url, c)
        finally:
            for name, path in logs.items():
                if path.exists():
                    print(f"--- {name} log ---\n" + path.read_text())


async def refused(call: Any) -> tuple[int, str]:
    with pytest.raises(RelayError) as caught:
        await call
    return caught.value.status, caught.value.code


async def test_contacts_and_groups_through_the_signed_api(
    stack: Stack, nc: NATS, settings: Settings
) -> None:
    async with RelayClient(stack.relay_url, API_KEY_ID, API_SECRET) as client:
        numbers = await client.check_numbers("acme", [ANA, "5511900000009"])
        assert [(n["phone"], n["on_whatsapp"]) for n in numbers] == [
            (ANA, True),
            ("5511900000009", False),
        ]
        assert (await client.contact("acme", ANA))["lid"] == ANA_LID
        lid = await client.resolve_lid("acme", ANA_LID)
        assert (lid["phone_jid"], lid["known"]) == (f"{ANA}@s.whatsapp.net", True)
        assert await refused(client.contact("acme", "5511900000009")) == (404, "not_on_whatsapp")
        await client.block("acme", BO)
        await client.unblock("acme", BO)
        await client.subscribe_presence("acme", ANA)

        group = (await client.create_group("acme", "Team", [ANA]))["jid"]
        assert [g["jid"] for g in await client.groups("acme")] == [group]
        results = (await client.change_participants("acme", group, "add", [BO, ANA]))["results"]
        assert [(r["ok"], r["error"]) for r in results] == [(True, None), (False, "409")]
        await client.update_group("acme", group, name="Team 2", locked=True)
        info = await client.group("acme", group)
        assert (info["name"], info["locked"]) == ("Team 2", True)
        link = await client.group_invite("acme", group)
        assert link.startswith("https://chat.whatsapp.com/")
        await client.leave_group("acme", group)
        assert await refused(client.group("acme", group)) == (404, "unknown_group")
        assert await client.join_group("acme", link) == group

        theirs = await cs.sim(
            nc, settings.topology, "acme", "group",
            {"name": "Theirs", "owner": ANA, "participants": [ANA], "admins": [ANA]},
        )  # fmt: skip
        change = client.change_participants("acme", theirs["group"], "remove", [ANA])
        assert await refused(change) == (403, "not_group_admin")
        assert await refused(client.group("acme", "120363000000001@g.us")) == (
            404,
            "unknown_group",
        )

    # the events the changes caused, as verified webhooks
    receiver = stack.receiver
    added = await receiver.wait_for(lambda e: e["type"] == "group.participants", timeout=20)
    assert added["data"]["participants"] == [f"{BO}@s.whatsapp.net"]
    renamed = await receiver.wait_for(lambda e: e["type"] == "group.settings", timeout=20)
    assert (renamed["data"]["name"], renamed["data"]["locked"]) == ("Team 2", True)
    await receiver.wait_for(lambda e: e["type"] == "group.left", timeout=20)

    # presence of a subscribed contact, a call rejected by policy, a LID sender's phone
    await cs.sim(nc, settings.topology, "acme", "presence", {"jid": ANA, "online": True})
    update = await receiver.wait_for(lambda e: e["type"] == "presence.update", timeout=20)
    assert (update["data"]["jid"], update["data"]["online"]) == (f"{ANA}@s.whatsapp.net", True)
    await cs.sim(nc, settings.topology, "acme", "call", {"from": ANA, "call_id": "C1"})
    offer = await receiver.wait_for(lambda e: e["type"] == "call.offer", timeout=20)
    assert offer["data"]["rejected"] is True
    await receiver.wait_for(lambda e: e["type"] == "call.ended", timeout=20)
    await cs.sim(nc, settings.topology, "acme", "inbound", {"from": ANA_LID, "text": "hi"})
    message = await receiver.wait_for(lambda e: e["type"] == "message.received", timeout=20)
    assert message["data"]["from_alt"] == f"{ANA}@s.whatsapp.net"


async def test_a_connector_away_is_a_504_and_a_stopped_instance_a_409(
    stack: Stack, nc: NATS, settings: Settings
) -> None:
    async with RelayClient(stack.relay_url, API_KEY_ID, API_SECRET) as client:
        assert await client.groups("acme") == []  # the positive control
        stack.connector.send_signal(signal.SIGSTOP)  # the connector is there but answers nothing
        try:
            # answered by the relay once WABUS_QUERY_TIMEOUT (3 s) ran out; a hang would end in
            # the client's own timeout instead, not in this problem
            status, code = await refused(client.groups("acme"))
        finally:
            stack.connector.send_signal(signal.SIGCONT)
        assert (status, code) == (504, "connector_timeout")
        assert await client.groups("acme") == []  # and it answers again
        await cs.create_instance(nc, settings.topology, "acme", desired_state="stopped")
        await eventually(lambda: cs.state_is(nc, settings.topology, "acme", "stopped"), timeout=20)
        assert await refused(client.groups("acme")) == (409, "instance_not_open")
    # a query for an instance that does not exist at all
    async with RelayClient(stack.relay_url, API_KEY_ID, API_SECRET) as client:
        assert await refused(client.groups("nobody")) == (404, "unknown_instance")
