"""Waiting, with a deadline, for a KV key to reach a state another service writes.

`Records.wait` on NATS (`relay.stores.nats_adapters`): `?wait=` on sends watches the
connector's send record, the pairing code the instance status. A watch delivers the key's
current value first, so nothing written between the publish and the watch is missed; the
deadline guarantees an answer, never a hang.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.kv import KeyValue


async def wait_for_value(
    kv: KeyValue, key: str, done: Callable[[bytes], bool], seconds: float
) -> bytes | None:
    """The first value of `key` for which `done` holds, or the last value seen (or None) once
    `seconds` have passed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    watcher = await kv.watch(key, ignore_deletes=True)
    last: bytes | None = None
    try:
        while (remaining := deadline - loop.time()) > 0:
            try:
                entry = await watcher.updates(timeout=remaining)  # type: ignore[no-untyped-call]
            except (NatsTimeoutError, TimeoutError):
                break
            if entry is None or not entry.value:
                continue
            value: bytes = entry.value
            last = value
            if done(value):
                return value
    finally:
        await watcher.stop()  # type: ignore[no-untyped-call]
    return last
