"""Idempotent sends, the crash window, pacing per instance, inbound media and the health app —
the connector in this process against a real nats-server, on the sim engine."""

from __future__ import annotations

import base64
import hashlib
import itertools
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from nats.aio.client import Client as NATS

from connector.sends import SendLedger
from schemas.envelope import utc_now
from schemas.instances import SendRecord, SendState
from tests import connector_support as cs
from tests.support import eventually
from wabus.embedded import free_port
from wabus.settings import Settings


async def _open(nc: NATS, settings: Settings, *instances: str) -> None:
    for instance in instances:
        await cs.create_instance(nc, settings.topology, instance)
    for instance in instances:
        await eventually(lambda i=instance: cs.state_is(nc, settings.topology, i, "open"))  # type: ignore[misc]


@pytest.fixture
async def connector(settings: Settings, nc: NATS) -> AsyncIterator[Settings]:
    settings = settings.model_copy(update={"port": free_port()})
    async with cs.connector_running(settings, nc):
        await _open(nc, settings, "acme")
        yield settings


async def record(nc: NATS, settings: Settings, instance: str, command_id: str) -> SendRecord | None:
    return await SendLedger(nc.jetstream(), settings.topology).get(instance, command_id)


async def final_record(nc: NATS, settings: Settings, command_id: str) -> SendRecord | None:
    found = await record(nc, settings, "acme", command_id)
    return found if found and found.state in (SendState.SENT, SendState.FAILED) else None


async def sim_sent(nc: NATS, settings: Settings, instance: str = "acme") -> list[dict[str, Any]]:
    answer = await cs.sim(nc, settings.topology, instance, "sent")
    sent: list[dict[str, Any]] = answer["sent"]
    return sent


async def test_a_send_is_recorded_before_it_is_acked(connector: Settings, nc: NATS) -> None:
    await cs.publish_command(
        nc, connector.topology, "acme", "c-1", {"to": "5511999999999", "text": "hi"}
    )
    done = await eventually(lambda: final_record(nc, connector, "c-1"))
    [sent] = await sim_sent(nc, connector)
    assert (done.state, done.message_id, done.chat) == (
        SendState.SENT, sent["message_id"], "5511999999999@s.whatsapp.net",
    )  # fmt: skip
    [event] = await eventually(lambda: cs.events_of(nc, connector.topology, "message.sent"))
    assert event["data"]["message_id"] == sent["message_id"]


async def test_a_redelivered_sent_command_is_answered_again_not_resent(
    connector: Settings, nc: NATS
) -> None:
    """The command was sent and recorded, then the connector died before the ack."""
    ledger = SendLedger(nc.jetstream(), connector.topology)
    await ledger.write("acme", "c-2", SendState.SENDING)
    await ledger.write(
        "acme", "c-2", SendState.SENT, message_id="3EB0AAAA", chat="1@s.whatsapp.net"
    )
    await cs.publish_command(
        nc, connector.topology, "acme", "c-2", {"to": "5511999999999", "text": "hi"}
    )
    [event] = await eventually(lambda: cs.events_of(nc, connector.topology, "message.sent"))
    assert (event["data"]["command_id"], event["data"]["message_id"]) == ("c-2", "3EB0AAAA")
    assert await sim_sent(nc, connector) == []
    await eventually(lambda: _commands_drained(nc, connector))


async def test_a_command_found_sending_is_not_sent_again(connector: Settings, nc: NATS) -> None:
    """The crash window: handed to WhatsApp, answer not recorded. At most once: no resend, and
    the outcome is reported as unknown."""
    await SendLedger(nc.jetstream(), connector.topology).write("acme", "c-3", SendState.SENDING)
    await cs.publish_command(
        nc, connector.topology, "acme", "c-3", {"to": "5511999999999", "text": "hi"}
    )
    [event] = await eventually(lambda: cs.events_of(nc, connector.topology, "message.failed"))
    assert (event["data"]["command_id"], event["data"]["code"]) == ("c-3", "outcome_unknown")
    assert event["data"]["retryable"] is False
    done = await eventually(lambda: final_record(nc, connector, "c-3"))
    assert (done.state, done.error_code) == (SendState.FAILED, "outcome_unknown")
    assert await sim_sent(nc, connector) == []


async def test_commands_for_unknown_or_logged_out_instances_fail_clearly(
    connector: Settings, nc: NATS
) -> None:
    await cs.publish_command(
        nc, connector.topology, "nobody", "c-4", {"to": "5511999999999", "text": "x"}
    )
    await cs.sim(nc, connector.topology, "acme", "logout")
    await eventually(lambda: cs.state_is(nc, connector.topology, "acme", "logged_out"))
    await cs.publish_command(
        nc, connector.topology, "acme", "c-5", {"to": "5511999999999", "text": "x"}
    )
    await cs.create_instance(nc, connector.topology, "idle", desired_state="stopped")
    await eventually(lambda: cs.state_is(nc, connector.topology, "idle", "stopped"))
    await cs.publish_command(
        nc, connector.topology, "idle", "c-6", {"to": "5511999999999", "text": "x"}
    )
    failures = await eventually(
        lambda: _at_least(cs.events_of(nc, connector.topology, "message.failed"), 3)
    )
    codes = {f["data"]["command_id"]: f["data"]["code"] for f in failures}
    assert codes == {
        "c-4": "unknown_instance",
        "c-5": "instance_not_connected",
        "c-6": "instance_not_connected",
    }


async def _at_least(pending: Any, number: int) -> Any:
    items = await pending
    return items if len(items) >= number else None


async def _commands_drained(nc: NATS, settings: Settings) -> bool:
    info = await nc.jetstream().stream_info(settings.topology.commands_stream)
    return info.state.messages == 0


async def test_sends_are_paced_per_instance_without_blocking_others(
    settings: Settings, nc: NATS
) -> None:
    settings = settings.model_copy(
        update={
            "port": free_port(),
            "send_interval": 0.3,
            "send_jitter": 0.0,
            "command_ack_wait": 1.0,  # the queue outlasts it: in_progress must keep it
        }
    )
    topology = settings.topology
    async with cs.connector_running(settings, nc):
        await _open(nc, settings, "acme", "beta")
        for number in range(6):
            await cs.publish_command(
                nc, topology, "acme", f"a-{number}", {"to": "5511999999999", "text": f"a{number}"}
            )
        await cs.publish_command(nc, topology, "beta", "b-0", {"to": "5511999999999", "text": "b"})
        beta = await eventually(lambda: _final(nc, settings, "beta", "b-0"))
        acme: list[SendRecord] = []
        for number in range(6):
            command_id = f"a-{number}"
            acme.append(await eventually(lambda c=command_id: _final(nc, settings, "acme", c)))  # type: ignore[misc]
        times = [r.updated_at for r in acme]
        gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(times)]
        assert all(gap >= 0.15 for gap in gaps), gaps  # queued, one per interval, none dropped
        assert [s["data"]["text"] for s in await sim_sent(nc, settings)] == [
            f"a{n}" for n in range(6)
        ]
        assert beta.updated_at < times[2]  # beta did not wait behind acme's queue
        await eventually(lambda: _commands_drained(nc, settings))
        consumer = await nc.jetstream().consumer_info(topology.commands_stream, "connector")
        # 7 commands, 7 deliveries: queued ones were kept alive (in_progress), not redelivered
        assert consumer.delivered.consumer_seq == 7


async def test_read_presence_and_typing_before_a_send(settings: Settings, nc: NATS) -> None:
    settings = settings.model_copy(update={"port": free_port(), "send_typing": 0.3})
    topology = settings.topology
    async with cs.connector_running(settings, nc):
        await _open(nc, settings, "acme")
        read = {"chat": "5511999999999", "message_ids": ["3EB0X"]}
        await cs.publish_command(nc, topology, "acme", "r-1", read, "read")
        presence = {"chat": "5511999999999", "state": "recording"}
        await cs.publish_command(nc, topology, "acme", "p-1", presence, "presence")
        asked = utc_now()
        await cs.publish_command(nc, topology, "acme", "t-1", {"to": "5511999999999", "text": "hi"})
        done = await eventually(lambda: _final(nc, settings, "acme", "t-1"))
        activity = await cs.sim(nc, topology, "acme", "activity")
        assert activity["reads"] == [
            {"chat": "5511999999999", "message_ids": ["3EB0X"], "sender": None}
        ]
        assert activity["presences"] == [
            {"chat": "5511999999999", "state": "recording"},
            {"chat": "5511999999999", "state": "composing"},  # typing… before the text
        ]
        assert (done.updated_at - asked).total_seconds() >= 0.3  # typed for the delay first


async def _final(nc: NATS, settings: Settings, instance: str, command_id: str) -> SendRecord | None:
    found = await record(nc, settings, instance, command_id)
    return found if found and found.state is SendState.SENT else None


async def test_inbound_media_is_stored_and_described(connector: Settings, nc: NATS) -> None:
    content = b"\x89PNG\r\n" + bytes(range(256)) * 40
    payload = {
        "from": "5511999999999", "id": "MEDIA1", "type": "image", "text": "a caption",
        "media": {"mimetype": "image/png"}, "media_base64": base64.b64encode(content).decode(),
    }  # fmt: skip
    assert await cs.sim(nc, connector.topology, "acme", "inbound", payload) == {"ok": True}
    [received] = await eventually(lambda: cs.events_of(nc, connector.topology, "message.received"))
    digest = hashlib.sha256(content).hexdigest()
    assert received["data"]["media"] == {
        "id": "med_" + digest[:32], "mimetype": "image/png", "size": len(content),
        "sha256": digest, "filename": None, "seconds": None, "voice": False, "animated": False,
    }  # fmt: skip
    store = await nc.jetstream().object_store(connector.topology.media_store)
    stored = await store.get(received["data"]["media"]["id"])
    assert stored.data == content
    assert stored.info.description == "image/png"


async def test_health_ready_and_metrics(connector: Settings, nc: NATS) -> None:
    await cs.publish_command(
        nc, connector.topology, "acme", "m-1", {"to": "5511999999999", "text": "hi"}
    )
    await eventually(lambda: final_record(nc, connector, "m-1"))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{connector.port}") as http:
        assert (await http.get("/healthz")).status_code == 200
        ready = await http.get("/readyz")
        metrics = (await http.get("/metrics")).text
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"nats": True, "streams": True}
    for name in (
        'wabus_connector_sessions{state="open"}',
        "wabus_connector_spool_depth",
        'wabus_connector_events_published_total{type="message.sent"}',
        "wabus_connector_send_seconds_count",
        "wabus_connector_reconnects_total",
        "wabus_connector_errors_total",
    ):
        assert name in metrics
