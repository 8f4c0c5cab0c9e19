"""Counting the relays that run (`relay.delivery.presence`) on a real nats-server: announced ones
count, one that left is counted out at once (its delete marker is skipped), one that stopped
announcing drops out with the bucket's TTL."""

from __future__ import annotations

from nats.aio.client import Client as NATS

from relay.delivery.presence import RelayPresence
from tests.support import eventually
from wabus.buckets import open_bucket
from wabus.settings import Settings

TTL = 1.0


async def test_relays_are_counted_in_and_out(nc: NATS, settings: Settings) -> None:
    js = nc.jetstream()
    bucket = settings.topology.webhook_leases_bucket
    await open_bucket(js, bucket, "presence test", ttl=TTL)
    first, second, third = (RelayPresence(js, bucket, f"relay-{n}") for n in range(3))
    assert await first.count() == 0  # nobody announced yet

    await first.announce()
    await second.announce()
    await third.announce()
    await first.announce()  # announcing again counts once
    assert await first.count() == 3
    await (await js.key_value(bucket)).put("global", b'{"holder": "relay-0"}')
    assert await first.count() == 3  # a lease is no relay

    await second.leave()
    assert await first.count() == 2  # at once, not after the TTL

    async def third_expired() -> bool:
        await first.announce()
        return await first.count() == 1

    assert await eventually(third_expired, timeout=10)
