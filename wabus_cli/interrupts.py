"""Running a long command (`wabus dev`, `wabus tail`) until the person at the terminal stops it."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""Ctrl-C, a service manager, and a closed terminal all ask for the same clean stop. SIGHUP
matters: `wabus dev`'s nats-server runs in a session of its own, so a closed terminal reaches
only this process, which must stop it."""


def run_until_interrupted(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run `main(stop)`; a stop signal sets `stop` (again: nothing more, the stop is under way
    and bounded by `main` itself)."""

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    asyncio.run(runner())
