"""Per-chat lanes: items of one chat are handled one at a time, in the order they were submitted;
items of different chats run concurrently, up to a limit.

This is what keeps a chat's webhooks in publish order while a thousand chats are delivered at once.
Pure asyncio, no I/O: the dispatcher submits JetStream messages, the tests submit numbers.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from wabus.logs import get_logger

log = get_logger(__name__)

T = TypeVar("T")


class ChatLanes(Generic[T]):
    def __init__(self, handle: Callable[[T], Awaitable[None]], concurrency: int) -> None:
        self._handle = handle
        self._slots = asyncio.Semaphore(concurrency)
        self._lanes: dict[Hashable, deque[T]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._pending = 0
        self._changed = asyncio.Event()

    @property
    def pending(self) -> int:
        """Items submitted and not finished yet."""
        return self._pending

    def submit(self, lane: Hashable, item: T) -> None:
        self._pending += 1
        queue = self._lanes.get(lane)
        if queue is not None:
            queue.append(item)  # the lane's runner takes it after the ones before it
            return
        self._lanes[lane] = deque([item])
        task = asyncio.create_task(self._run(lane))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, lane: Hashable) -> None:
        queue = self._lanes[lane]
        async with self._slots:
            while queue:
                item = queue[0]
                try:
                    await self._handle(item)
                except Exception:  # one item's failure never stalls its lane
                    log.exception("lane item failed", lane=str(lane))
                finally:
                    queue.popleft()
                    self._pending -= 1
                    self._changed.set()
        del self._lanes[lane]

    async def wait_below(self, limit: int) -> None:
        """Return once fewer than `limit` items are pending (backpressure for the producer)."""
        while self._pending >= limit:
            self._changed.clear()
            await self._changed.wait()

    async def drain(self) -> None:
        await self.wait_below(1)
