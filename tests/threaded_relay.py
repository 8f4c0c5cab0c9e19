"""A real relay (uvicorn on a loopback port, a real nats-server) on an event loop in a background
thread, for property tests: hypothesis and schemathesis drive synchronous functions, so the relay
and the NATS client must run on a loop of their own."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import nats

from relay.app import create_app
from tests.conftest import delete_streams
from tests.support import running
from wabus.settings import Settings

T = TypeVar("T")


@dataclass
class Relay:
    """A relay and a NATS client living on an event loop in a background thread."""

    url: str
    loop: asyncio.AbstractEventLoop
    settings: Settings
    count_commands: Callable[[], Coroutine[Any, Any, int]]
    """Messages in `WA_COMMANDS` now: what a refused request must not have changed."""

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run `coroutine` on the relay's loop and wait for it (30 s at most)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)

    def commands(self) -> int:
        return self.run(self.count_commands())


def fuzz_settings(settings: Settings) -> Settings:
    """Settings for a relay under a flood of generated requests from one address.

    `?wait=` may be drawn up to 120 s: the relay's cap is short so fuzzing stays fast; the
    per-address limit on failed authentication is off (the fuzzers send hundreds of bad
    signatures on purpose, and every answer must still be the relay's own); the per-key rate
    limit is off for the same reason."""
    return settings.model_copy(
        update={"max_wait_seconds": 0.2, "auth_failure_limit": 0, "rate_limit": 0.0}
    )


@contextlib.contextmanager
def threaded_relay(settings: Settings) -> Iterator[Relay]:
    """Serve a relay with `settings` until the block ends; its streams and buckets are deleted
    afterwards."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    ready: asyncio.Future[Relay] = asyncio.Future(loop=loop)
    stop = asyncio.Event()

    async def serve() -> None:
        client = await nats.connect(settings.nats_url or "")
        js = client.jetstream()

        async def count() -> int:
            info = await js.stream_info(settings.topology.commands_stream)
            return int(info.state.messages)

        topology = settings.topology
        try:
            async with running(create_app(settings)) as url:
                ready.set_result(Relay(url, loop, settings, count))
                await stop.wait()
        finally:
            await delete_streams(js, topology)
            await client.close()

    async def started() -> Relay:
        return await asyncio.wait_for(ready, 20)

    serving = asyncio.run_coroutine_threadsafe(serve(), loop)
    try:
        yield asyncio.run_coroutine_threadsafe(started(), loop).result(30)
    finally:
        loop.call_soon_threadsafe(stop.set)
        serving.result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        # Let transports that are closing (NATS connections) finish on their own loop before it
        # closes; otherwise their finalisers warn later, inside whichever test runs then.
        loop.run_until_complete(asyncio.sleep(0.2))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
