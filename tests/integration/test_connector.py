"""The connector on the sim engine against a real nats-server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from nats.aio.client import Client as NATS

from tests import connector_support as cs
from tests.support import eventually
from wabus.embedded import free_port
from wabus.settings import Settings


@pytest.fixture
async def connector(settings: Settings, nc: NATS) -> AsyncIterator[Settings]:
    settings = settings.model_copy(update={"port": free_port()})
    async with cs.connector_running(settings, nc):
        await cs.create_instance(nc, settings.topology, "acme")
        await eventually(lambda: cs.state_is(nc, settings.topology, "acme", "open"))
        yield settings


async def events_of(nc: NATS, settings: Settings, event_type: str) -> list[dict[str, Any]]:
    return await cs.events_of(nc, settings.topology, event_type)


async def publish_command(
    nc: NATS, settings: Settings, command_id: str, data: dict[str, Any]
) -> None:
    await cs.publish_command(nc, settings.topology, "acme", command_id, data)


async def test_sim_inbound_lands_in_wa_events_with_a_stable_id(
    connector: Settings, nc: NATS
) -> None:
    payload = {"from": "5511999999999", "text": "hello", "id": "WAMSG1"}
    answer = await nc.request(
        connector.topology.sim("acme", "inbound"), json.dumps(payload).encode(), timeout=5
    )
    assert json.loads(answer.data) == {"ok": True}
    [received] = await eventually(lambda: events_of(nc, connector, "message.received"))
    assert received["instance"] == "acme"
    assert received["data"]["message_id"] == "WAMSG1"
    assert received["data"]["text"] == "hello"
    # the same WhatsApp message played again is the same envelope, dropped by JetStream
    await nc.request(
        connector.topology.sim("acme", "inbound"), json.dumps(payload).encode(), timeout=5
    )
    await asyncio.sleep(0.3)
    assert [e["id"] for e in await events_of(nc, connector, "message.received")] == [received["id"]]


async def test_a_send_command_becomes_message_sent_and_is_acked(
    connector: Settings, nc: NATS
) -> None:
    await publish_command(nc, connector, "cmd-1", {"to": "5511999999999", "text": "hi"})
    [sent] = await eventually(lambda: events_of(nc, connector, "message.sent"))
    assert sent["data"]["command_id"] == "cmd-1"
    assert sent["data"]["chat"] == "5511999999999@s.whatsapp.net"
    assert sent["data"]["message_id"].startswith("3EB0")
    info = await eventually(lambda: _drained(nc, connector))
    assert info.state.messages == 0


async def _drained(nc: NATS, settings: Settings) -> Any:
    info = await nc.jetstream().stream_info(settings.topology.commands_stream)
    return info if info.state.messages == 0 else None


async def test_failed_and_invalid_commands_become_message_failed(
    connector: Settings, nc: NATS
) -> None:
    await nc.request(
        connector.topology.sim("acme", "fail_next_sends"),
        b'{"count": 1, "code": "not_on_whatsapp"}',
        timeout=5,
    )
    await publish_command(nc, connector, "cmd-fail", {"to": "5511999999999", "text": "hi"})
    await publish_command(nc, connector, "cmd-bad", {"to": "5511999999999"})
    failures = await eventually(lambda: _when_count(events_of(nc, connector, "message.failed"), 2))
    by_command = {f["data"]["command_id"]: f["data"] for f in failures}
    assert by_command["cmd-fail"]["code"] == "not_on_whatsapp"
    assert by_command["cmd-bad"]["code"] == "invalid_command"
    assert "text" in by_command["cmd-bad"]["reason"]
    assert await _drained(nc, connector)


async def _when_count(pending: Any, count: int) -> Any:
    items = await pending
    return items if len(items) >= count else None


async def test_bad_sim_control_is_answered_not_fatal(connector: Settings, nc: NATS) -> None:
    answer = await nc.request(connector.topology.sim("acme", "inbound"), b"{}", timeout=5)
    assert json.loads(answer.data)["ok"] is False
    async with httpx.AsyncClient() as http:
        ready = await http.get(f"http://127.0.0.1:{connector.port}/readyz")
    assert ready.status_code == 200
