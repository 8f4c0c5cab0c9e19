"""Per-chat lanes: one chat's items in order, different chats at once, backpressure."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict

from relay.delivery.lanes import ChatLanes


async def test_each_lane_keeps_its_order_while_lanes_interleave() -> None:
    seen: dict[int, list[int]] = defaultdict(list)
    running = 0
    most = 0
    rng = random.Random(7)

    async def handle(item: tuple[int, int]) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(rng.random() / 1000)
        seen[item[0]].append(item[1])
        running -= 1

    async with ChatLanes[tuple[int, int]](handle, concurrency=8) as lanes:
        for n in range(100):
            for chat in range(20):
                lanes.submit(chat, (chat, n))
        await lanes.drain()
    assert dict(seen) == {chat: list(range(100)) for chat in range(20)}
    assert 1 < most <= 8
    assert lanes.pending == 0


async def test_a_failing_item_does_not_stall_its_lane() -> None:
    done: list[int] = []

    async def handle(item: int) -> None:
        if item == 1:
            raise RuntimeError("boom")
        done.append(item)

    async with ChatLanes[int](handle, concurrency=2) as lanes:
        for item in range(4):
            lanes.submit("chat", item)
        await lanes.drain()
    assert done == [0, 2, 3]


async def test_wait_below_holds_the_producer_until_items_finish() -> None:
    gate = asyncio.Event()

    async def handle(item: int) -> None:
        await gate.wait()

    async with ChatLanes[int](handle, concurrency=4) as lanes:
        for item in range(10):
            lanes.submit(item, item)
        waiter = asyncio.create_task(lanes.wait_below(5))
        await asyncio.sleep(0.01)
        assert not waiter.done()
        gate.set()
        await asyncio.wait_for(waiter, 1)
        await lanes.drain()
