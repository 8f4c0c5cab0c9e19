"""Leases against a real nats-server: create-with-TTL claims, compare-and-set renewals, takeover
when a connector goes away."""

from __future__ import annotations

from typing import Any

from nats.aio.client import Client as NATS

from connector.buckets import ensure_buckets
from tests import connector_support as cs
from tests.support import eventually
from wabus.embedded import free_port
from wabus.leases import Leases
from wabus.settings import Settings


async def test_a_lease_is_held_by_one_connector_until_it_expires(
    settings: Settings, nc: NATS
) -> None:
    js, topology = nc.jetstream(), settings.topology
    await ensure_buckets(js, topology, lease_ttl=1.0)
    bucket = topology.leases_bucket
    first, second = Leases(js, bucket, "a", 1.0), Leases(js, bucket, "b", 1.0)
    assert await first.acquire("acme")
    assert not await second.acquire("acme")
    assert await first.renew() == []
    assert await Leases(js, bucket, "a", 1.0).acquire("acme")  # "a" restarted: takes it back
    # "a" stops renewing: the lease expires and "b" may claim it; "a" learns it lost it
    await eventually(lambda: second.acquire("acme"), timeout=10, interval=0.2)
    assert await first.renew() == ["acme"]
    assert first.held == set()
    await second.release("acme")
    assert await first.acquire("acme")


async def test_two_connectors_share_instances_without_both_opening_one(
    settings: Settings, nc: NATS
) -> None:
    base = settings.model_copy(update={"leases": True, "lease_ttl": 1.5})
    topology = base.topology
    runners = {
        name: cs.connector_running(
            base.model_copy(update={"port": free_port(), "connector_id": name}), nc
        )
        for name in ("one", "two")
    }
    for runner in runners.values():
        await runner.__aenter__()
    try:
        await cs.create_instance(nc, topology, "acme")
        opened = await eventually(lambda: cs.state_is(nc, topology, "acme", "open"))
        holder = str(opened.connector)
        assert holder in runners
        data: dict[str, Any] = {"to": "5511999999999", "text": "via the holder"}
        await cs.publish_command(nc, topology, "acme", "l-1", data)
        [sent] = await eventually(lambda: cs.events_of(nc, topology, "message.sent"))
        assert sent["data"]["command_id"] == "l-1"
        assert len(await cs.events_of(nc, topology, "connection.open")) == 1

        # the holder leaves (releasing its lease): the other connector picks the instance up
        await runners.pop(holder).__aexit__(None, None, None)
        [survivor] = runners
        await eventually(lambda: _open_at(nc, settings, survivor), timeout=15)
    finally:
        for runner in runners.values():
            await runner.__aexit__(None, None, None)


async def _open_at(nc: NATS, settings: Settings, connector: str) -> bool:
    status = await cs.status_of(nc, settings.topology, "acme")
    return status is not None and status.connector == connector and status.state.value == "open"


async def test_a_session_stops_at_once_when_its_lease_is_taken(
    settings: Settings, nc: NATS
) -> None:
    settings = settings.model_copy(
        update={"leases": True, "lease_ttl": 1.5, "port": free_port(), "connector_id": "one"}
    )
    topology = settings.topology
    inbound = {"from": "5511999999999", "text": "hello"}
    async with cs.connector_running(settings, nc):
        await cs.create_instance(nc, topology, "acme")
        await eventually(lambda: cs.state_is(nc, topology, "acme", "open"))
        assert (await cs.sim(nc, topology, "acme", "inbound", inbound))["ok"] is True
        leases = await nc.jetstream().key_value(topology.leases_bucket)
        await leases.put("acme", b'{"connector": "intruder"}')  # another connector took it
        await eventually(lambda: _refused(nc, settings, inbound), timeout=5)


async def _refused(nc: NATS, settings: Settings, inbound: dict[str, str]) -> bool:
    answer = await cs.sim(nc, settings.topology, "acme", "inbound", inbound)
    return answer["ok"] is False and "not open" in answer["error"]


async def test_a_holder_is_sure_of_its_lease_for_one_ttl_and_a_release_is_a_handover(
    settings: Settings, nc: NATS
) -> None:
    js, topology = nc.jetstream(), settings.topology
    await ensure_buckets(js, topology, lease_ttl=1.0)
    bucket = topology.leases_bucket
    now = [100.0]
    first = Leases(js, bucket, "a", 1.0, clock=lambda: now[0])
    second = Leases(js, bucket, "b", 1.0)
    assert not first.holds("acme")  # never claimed
    assert await first.acquire("acme")
    assert first.holds("acme")
    assert not first.handed_over("acme")  # a fresh claim, not a handover
    now[0] += 0.99
    assert first.holds("acme")
    now[0] += 0.02  # a TTL since the claim was sent, and no renewal: no longer sure
    assert not first.holds("acme")
    assert await first.renew() == []  # the key had not expired on the server yet: renewed
    assert first.holds("acme")
    await first.release("acme")
    assert not first.holds("acme")
    assert await second.acquire("acme")
    assert second.handed_over("acme")  # released with a marker: nothing of "a" still runs
    # "b" vanishes without releasing: the next claim, once the key expired, is not a handover
    third = Leases(js, bucket, "c", 1.0)
    await eventually(lambda: third.acquire("acme"), timeout=10, interval=0.2)
    assert not third.handed_over("acme")


async def test_a_release_after_a_renewal_it_did_not_record_still_hands_the_lease_over(
    settings: Settings, nc: NATS
) -> None:
    """A renewal cut off while stopping may land without its revision being recorded; the
    release that follows must still write the hand-over marker, not leave the lease to expire."""
    js, topology = nc.jetstream(), settings.topology
    await ensure_buckets(js, topology, lease_ttl=30.0)
    leases = Leases(js, topology.leases_bucket, "a", 30.0)
    assert await leases.acquire("acme")
    kv = await js.key_value(topology.leases_bucket)
    entry = await kv.get("acme")
    await kv.update("acme", entry.value or b"", last=entry.revision)  # the unrecorded renewal
    await leases.release("acme")
    assert await Leases(js, topology.leases_bucket, "b", 30.0).acquire("acme")  # at once
    released = await kv.get("acme")
    assert b'"holder": "b"' in (released.value or b"")
