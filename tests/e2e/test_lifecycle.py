"""The session lifecycle end to end on the sim engine, through NATS only: instances created in
the config bucket, controls on the sim subjects, state read from the status bucket and the events
from `WA_EVENTS`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from tests import connector_support as cs
from tests.support import eventually
from wabus.embedded import free_port
from wabus.settings import Settings

pytestmark = pytest.mark.e2e


@pytest.fixture
async def qr_connector(settings: Settings, nc: NATS) -> AsyncIterator[Settings]:
    """Sessions start unpaired, QR codes refresh every 0.2 s, reconnects wait ~50-100 ms."""
    settings = settings.model_copy(
        update={
            "port": free_port(),
            "sim_pairing": "qr",
            "sim_qr_interval": 0.2,
            "qr_max_refreshes": 100,
            "reconnect_base": 0.1,
            "reconnect_max": 0.2,
        }
    )
    async with cs.connector_running(settings, nc):
        yield settings


async def count(nc: NATS, settings: Settings, event_type: str, at_least: int) -> Any:
    events = await cs.events_of(nc, settings.topology, event_type)
    return events if len(events) >= at_least else None


def moment(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def test_qr_scan_open_drop_reconnect_logout(qr_connector: Settings, nc: NATS) -> None:
    settings, topology = qr_connector, qr_connector.topology
    await cs.create_instance(nc, topology, "acme")

    # QR codes, refreshed, each with its expiry, the current one in the status
    qrs = await eventually(lambda: count(nc, settings, "connection.qr", 2))
    assert [q["data"]["refresh"] for q in qrs[:2]] == [0, 1]
    assert qrs[0]["data"]["qr"] != qrs[1]["data"]["qr"]
    for qr in qrs:
        assert moment(qr["data"]["expires_at"]) > moment(qr["timestamp"])
    status = await eventually(lambda: cs.state_is(nc, topology, "acme", "qr"))
    assert status.qr
    assert status.qr.startswith("2@")
    assert status.qr_expires_at is not None
    assert status.qr_refreshes >= 1

    # scan → open
    assert await cs.sim(nc, topology, "acme", "scan") == {"ok": True}
    opened = await eventually(lambda: cs.state_is(nc, topology, "acme", "open"))
    assert (opened.qr, opened.attempt, opened.jid) == (None, 0, "15550000000@s.whatsapp.net")
    [open_event] = await eventually(lambda: count(nc, settings, "connection.open", 1))
    assert open_event["data"]["phone"] == "15550000000"
    qr_count = len(await cs.events_of(nc, topology, "connection.qr"))

    # drop → closed (will reconnect, with attempt and retry time) → open again
    assert await cs.sim(nc, topology, "acme", "drop") == {"ok": True}
    [closed] = await eventually(lambda: count(nc, settings, "connection.close", 1))
    assert closed["data"]["reason"] == "network"
    assert closed["data"]["will_reconnect"] is True
    assert closed["data"]["attempt"] == 1
    assert moment(closed["data"]["retry_at"]) > moment(closed["timestamp"])
    await eventually(lambda: count(nc, settings, "connection.open", 2))
    reopened = await eventually(lambda: cs.state_is(nc, topology, "acme", "open"))
    assert reopened.attempt == 0
    assert len(await cs.events_of(nc, topology, "connection.qr")) == qr_count  # still paired

    # logout → logged_out, and it stays down
    assert await cs.sim(nc, topology, "acme", "logout") == {"ok": True}
    logged_out = await eventually(lambda: cs.state_is(nc, topology, "acme", "logged_out"))
    assert logged_out.reason_code == "logged_out"
    [event] = await eventually(lambda: count(nc, settings, "connection.logged_out", 1))
    assert event["instance"] == "acme"
    assert len(await cs.events_of(nc, topology, "connection.open")) == 2

    # writing the instance again restarts it: unpaired now, so it shows a QR again
    await cs.create_instance(nc, topology, "acme")
    await eventually(lambda: cs.state_is(nc, topology, "acme", "qr"))


async def test_unscanned_qr_ends_in_failed_not_a_loop(settings: Settings, nc: NATS) -> None:
    settings = settings.model_copy(
        update={
            "port": free_port(),
            "sim_pairing": "qr",
            "sim_qr_interval": 0.05,
            "qr_max_refreshes": 2,
        }
    )
    async with cs.connector_running(settings, nc):
        await cs.create_instance(nc, settings.topology, "acme")
        failed = await eventually(lambda: cs.state_is(nc, settings.topology, "acme", "failed"))
        assert failed.reason_code == "qr_exhausted"
        assert failed.qr is None
        [event] = await eventually(lambda: count(nc, settings, "connection.failed", 1))
        assert event["data"]["code"] == "qr_exhausted"
        qrs = await cs.events_of(nc, settings.topology, "connection.qr")
        assert [q["data"]["refresh"] for q in qrs] == [0, 1, 2]


async def test_failing_connects_back_off_and_recover(settings: Settings, nc: NATS) -> None:
    settings = settings.model_copy(
        update={"port": free_port(), "reconnect_base": 0.05, "reconnect_max": 0.4}
    )
    topology = settings.topology
    async with cs.connector_running(settings, nc):
        await cs.create_instance(nc, topology, "acme")
        await eventually(lambda: cs.state_is(nc, topology, "acme", "open"))
        await cs.sim(nc, topology, "acme", "fail_connect", {"count": 3})
        await cs.sim(nc, topology, "acme", "drop")
        await eventually(lambda: count(nc, settings, "connection.open", 2))
        closes = await cs.events_of(nc, topology, "connection.close")
        assert [c["data"]["attempt"] for c in closes] == [1, 2, 3, 4]
        assert [c["data"]["reason"] for c in closes] == ["network"] * 4
        waits = [
            (moment(c["data"]["retry_at"]) - moment(c["timestamp"])).total_seconds() for c in closes
        ]
        for attempt, wait in enumerate(waits, start=1):
            ceiling = min(0.4, 0.05 * 2 ** (attempt - 1))
            # the event is stamped a moment after the delay was drawn: only ever a bit shorter
            assert ceiling / 2 - 0.1 <= wait <= ceiling + 0.001
        connecting = await cs.events_of(nc, topology, "connection.connecting")
        assert [c["data"]["attempt"] for c in connecting] == [0, 1, 2, 3, 4]
        assert (await cs.state_is(nc, topology, "acme", "open")).attempt == 0


async def test_instances_are_data(settings: Settings, nc: NATS) -> None:
    settings = settings.model_copy(update={"port": free_port()})
    topology = settings.topology
    async with cs.connector_running(settings, nc):
        for instance in ("one", "two", "three"):
            await cs.create_instance(nc, topology, instance)
        for instance in ("one", "two", "three"):
            await eventually(lambda i=instance: cs.state_is(nc, topology, i, "open"))  # type: ignore[misc]
        await cs.create_instance(nc, topology, "two", desired_state="stopped")
        await eventually(lambda: cs.state_is(nc, topology, "two", "stopped"))
        await cs.delete_instance(nc, topology, "three")
        await eventually(lambda: _gone(nc, settings, "three"))
        assert await cs.sim(nc, topology, "one", "scan") == {"ok": True}
    # a new connector restores what the bucket says: one running, two stopped, three gone
    async with cs.connector_running(settings, nc):
        await eventually(lambda: cs.state_is(nc, topology, "one", "open"))
        await eventually(lambda: cs.state_is(nc, topology, "two", "stopped"))
        assert await cs.status_of(nc, topology, "three") is None


async def _gone(nc: NATS, settings: Settings, instance: str) -> bool:
    return await cs.status_of(nc, settings.topology, instance) is None


async def test_phone_pairing_code_by_command(qr_connector: Settings, nc: NATS) -> None:
    topology = qr_connector.topology
    await cs.create_instance(nc, topology, "acme")
    await eventually(lambda: cs.state_is(nc, topology, "acme", "qr"))
    await cs.publish_command(
        nc, topology, "acme", "pair-1", {"phone": "+55 11 99999-9999"}, "pair_phone"
    )
    pairing = await eventually(lambda: cs.state_is(nc, topology, "acme", "pairing"))
    assert pairing.pair_code
    assert len(pairing.pair_code) == 9
    [event] = await eventually(lambda: count(nc, qr_connector, "connection.pair_code", 1))
    assert event["data"] == {
        "code": pairing.pair_code,
        "phone": "5511999999999",
        "expires_at": None,
    }
    # QR refreshes go on while the code is out; the session stays `pairing`, code kept
    shown = len(await cs.events_of(nc, topology, "connection.qr"))
    await eventually(lambda: count(nc, qr_connector, "connection.qr", shown + 1))
    still = await cs.status_of(nc, topology, "acme")
    assert still is not None
    assert (still.state.value, still.pair_code) == ("pairing", pairing.pair_code)
    assert len(await cs.events_of(nc, topology, "connection.pair_code")) == 1
    await cs.sim(nc, topology, "acme", "scan")
    opened = await eventually(lambda: cs.state_is(nc, topology, "acme", "open"))
    assert opened.pair_code is None
    await cs.publish_command(nc, topology, "acme", "logout-1", {}, "logout")
    await eventually(lambda: cs.state_is(nc, topology, "acme", "logged_out"))
    # pairing by phone again after a logout restarts the session and issues a new code
    await cs.publish_command(
        nc, topology, "acme", "pair-2", {"phone": "5511888888888"}, "pair_phone"
    )
    again = await eventually(lambda: cs.state_is(nc, topology, "acme", "pairing"))
    assert again.pair_code not in (None, pairing.pair_code)
