"""The hand-made JetStream pull (`relay.delivery.pull`) against a real nats-server: what a pull
consumer's client must get right — order, batches, the request's end, messages that come after a
fetch returned, acknowledgements, a consumer that goes away or is not there, a server that
restarts."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig

from relay.delivery.pull import ConsumerGone, Pull
from tests.support import eventually
from wabus.embedded import EmbeddedNats


@pytest.fixture
async def stream(nc: NATS) -> AsyncIterator[str]:
    name = "PULL" + uuid.uuid4().hex[:10].upper()
    js = nc.jetstream()
    await js.add_stream(name=name, subjects=[f"{name.lower()}.>"])
    await js.add_consumer(
        name,
        ConsumerConfig(
            durable_name="d", ack_policy=AckPolicy.EXPLICIT, ack_wait=300, max_ack_pending=10_000
        ),
    )
    yield name
    await js.delete_stream(name)


async def publish(js: JetStreamContext, stream: str, numbers: range) -> None:
    for number in numbers:
        await js.publish(f"{stream.lower()}.{number % 7}", str(number).encode())


def numbers(messages: list[Msg]) -> list[int]:
    return [int(message.data) for message in messages]


async def take(pull: Pull, count: int, expires: float = 0.5) -> list[Msg]:
    """Fetch until `count` messages came (a fetch returns as soon as any have arrived)."""
    got: list[Msg] = []
    for _ in range(100):
        got += await pull.fetch(count - len(got), expires)
        if len(got) >= count:
            break
    return got


async def test_batches_come_in_stream_order_with_consecutive_delivery_numbers(
    nc: NATS, stream: str
) -> None:
    js = nc.jetstream()
    await publish(js, stream, range(1000))
    got: list[Msg] = []
    async with Pull(nc, stream, "d") as pull:
        while len(got) < 1000:
            batch = await pull.fetch(256, 1.0)
            assert 0 < len(batch) <= 256
            got += batch
    assert numbers(got) == list(range(1000))
    assert [m.metadata.sequence.consumer for m in got] == list(range(1, 1001))


async def test_an_empty_consumer_ends_the_request_with_nothing(nc: NATS, stream: str) -> None:
    async with Pull(nc, stream, "d") as pull:
        assert await pull.fetch(10, 0.3) == []
        await publish(nc.jetstream(), stream, range(3))  # a positive control, after the wait
        assert numbers(await take(pull, 3)) == [0, 1, 2]


async def test_a_message_published_while_waiting_is_returned_by_that_fetch(
    nc: NATS, stream: str
) -> None:
    async with Pull(nc, stream, "d") as pull:
        waiting = asyncio.create_task(pull.fetch(1, 5.0))
        await asyncio.sleep(0.2)
        await publish(nc.jetstream(), stream, range(1))
        assert numbers(await waiting) == [0]


async def test_one_event_is_not_held_back_waiting_for_a_batch_to_fill(
    nc: NATS, stream: str
) -> None:
    """A fetch for 256 with a minute's expiry returns the single message there is, long before
    JetStream would end the request (the bound is a hang guard, a third of the expiry)."""
    await publish(nc.jetstream(), stream, range(1))
    async with Pull(nc, stream, "d") as pull:
        assert numbers(await asyncio.wait_for(pull.fetch(256, 60.0), 20)) == [0]
        # the request stays open for a minute: ending the consumer ends it, so closing is quick
        await nc.jetstream().delete_consumer(stream, "d")


async def test_messages_arriving_after_a_fetch_returned_are_kept_for_the_next(
    nc: NATS, stream: str
) -> None:
    """Short requests while publishing goes on: whatever a request delivers after its fetch gave
    up is handed out by the next fetch — none lost, none out of order."""
    js = nc.jetstream()
    producer = asyncio.create_task(publish(js, stream, range(2000)))
    got: list[Msg] = []
    async with Pull(nc, stream, "d") as pull:
        while len(got) < 2000:
            got += await pull.fetch(50, 0.01)
    await producer
    assert numbers(got) == list(range(2000))
    assert [m.metadata.sequence.consumer for m in got] == list(range(1, 2001))


async def test_acknowledgements_work_on_the_messages_returned(nc: NATS, stream: str) -> None:
    js = nc.jetstream()
    await publish(js, stream, range(3))
    async with Pull(nc, stream, "d") as pull:
        first, second, third = await take(pull, 3)
        await first.ack()
        await second.nak()
        await third.in_progress()
        again = await pull.fetch(3, 0.5)
        assert numbers(again) == [1]  # the nak'd one, a second time; the others are not due
        assert again[0].metadata.num_delivered == 2

    async def settled() -> bool:
        info = await js.consumer_info(stream, "d")
        return bool(info.num_ack_pending == 2 and info.ack_floor.stream_seq == 1)

    await eventually(settled)


async def test_a_deleted_consumer_is_reported_so_it_can_be_bound_again(
    nc: NATS, stream: str
) -> None:
    async with Pull(nc, stream, "d") as pull:
        waiting = asyncio.create_task(pull.fetch(10, 5.0))
        await asyncio.sleep(0.2)
        await nc.jetstream().delete_consumer(stream, "d")
        with pytest.raises(ConsumerGone):
            await waiting


async def test_a_consumer_that_does_not_exist_is_unavailable(nc: NATS, stream: str) -> None:
    """No consumer answers the request (as while a cluster elects its leader): 503."""
    async with Pull(nc, stream, "nobody") as pull:
        with pytest.raises(nats.js.errors.ServiceUnavailableError):
            await pull.fetch(10, 0.5)
        # and the same pull goes on once there is a consumer (a positive control)
        await nc.jetstream().add_consumer(stream, ConsumerConfig(durable_name="nobody"))
        await publish(nc.jetstream(), stream, range(2))
        assert numbers(await take(pull, 2)) == [0, 1]


async def test_a_restarted_server_is_pulled_from_again(tmp_path: Path) -> None:
    """While the server is away a fetch returns nothing (no error); after it is back the same
    pull gets what was stored before and after."""
    server = EmbeddedNats(tmp_path / "store").start()
    client = await nats.connect(server.url, reconnect_time_wait=0.1, max_reconnect_attempts=-1)
    try:
        js = client.jetstream()
        await js.add_stream(name="R", subjects=["r.>"])
        await js.add_consumer("R", ConsumerConfig(durable_name="d", ack_policy=AckPolicy.EXPLICIT))
        await publish(js, "R", range(2))
        async with Pull(client, "R", "d") as pull:
            assert numbers(await take(pull, 1)) == [0]
            server.stop()
            assert await pull.fetch(10, 0.3) == []
            server = EmbeddedNats(tmp_path / "store", port=server.port).start()
            await eventually(lambda: _connected(client), timeout=10)
            await publish(js, "R", range(2, 3))
            remaining: list[int] = []
            for _ in range(50):  # the first requests may go out before the stream is back
                remaining += numbers(await pull.fetch(10, 0.3))
                if len(remaining) >= 2:
                    break
            assert remaining == [1, 2]
    finally:
        await client.close()
        server.stop()


async def _connected(client: NATS) -> bool:
    return bool(client.is_connected)


async def test_what_is_handed_back_at_close_goes_to_the_next_pull_at_once(
    nc: NATS, stream: str
) -> None:
    """A message handed back while a request is still open on the server comes back into that
    request; closing waits the request out and hands it back again, so the next pull gets it
    at once — not after the acknowledgement window (300 s here). (Without the wait, the
    dispatcher's hand-back after a 410 lost its events for a window every time:
    `tests/integration/test_webhook_attempts.py`.)"""
    js = nc.jetstream()
    await publish(js, stream, range(1))
    first = Pull(nc, stream, "d")
    async with first:
        [message] = await first.fetch(10, 1.0)  # the request stays open for 9 more
        await message.nak()
        await first.close(hand_back=True)
    async with Pull(nc, stream, "d") as second:
        [again] = await take(second, 1)
    assert numbers([again]) == [0]
    assert again.metadata.num_delivered >= 2
