"""Opening the relay's stores on NATS for the app's lifetime: connect, make sure the streams and
buckets exist, start webhook delivery; on the way out stop delivery and drain the connection."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from relay.delivery.service import Deliveries, open_delivery_log
from relay.jetstream import Acks
from relay.replay import NatsReplayGuard
from relay.stores.nats_adapters import (
    NatsCommandBus,
    NatsEventFeed,
    NatsHealth,
    NatsInstanceStore,
    NatsMediaStore,
    NatsRecords,
)
from relay.stores.ports import Stores
from relay.stores.queries import NatsQueries
from wabus.buckets import open_instance_buckets
from wabus.natsbus import connect, ensure_streams, until_ready
from wabus.settings import Settings


@contextlib.asynccontextmanager
async def open_nats_stores(settings: Settings) -> AsyncIterator[Stores]:
    """The production `OpenStores`: every port on one NATS connection."""
    nc = await connect(settings, "wabus-relay")
    js = nc.jetstream()
    topology = settings.topology
    await until_ready(lambda: ensure_streams(js, settings), "streams")
    acks = await Acks.open(nc)
    replay = await NatsReplayGuard.open(acks, js, topology)
    buckets = await until_ready(
        lambda: open_instance_buckets(js, topology, replicas=settings.stream_replicas), "buckets"
    )
    deliveries = await Deliveries.open(nc, settings, await open_delivery_log(settings))
    stores = Stores(
        instances=NatsInstanceStore(buckets.config),
        status=NatsRecords(buckets.status),
        sends=NatsRecords(buckets.sends),
        commands=NatsCommandBus(nc, acks),
        replay=replay,
        media=NatsMediaStore(js, topology.media_store),
        deliveries=deliveries,
        health=NatsHealth(nc, js, settings),
        queries=NatsQueries(nc, topology),
        feed=NatsEventFeed(nc),
    )
    stop = asyncio.Event()
    delivering = asyncio.create_task(deliveries.run(stop))
    try:
        yield stores
    finally:
        stop.set()
        await delivering
        await nc.drain()
