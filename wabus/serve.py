"""Running ASGI apps and services inside one asyncio loop, stopped by one signal-driven event."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Generator

import uvicorn
from starlette.types import ASGIApp

from wabus.deadlines import DEFAULT_BODY_TIMEOUT, DEFAULT_HEADER_TIMEOUT, deadline_protocol


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the process owns signals, not each server."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def serve_app(
    app: ASGIApp,
    host: str,
    port: int,
    stop: asyncio.Event,
    *,
    header_timeout: float = DEFAULT_HEADER_TIMEOUT,
    body_timeout: float = DEFAULT_BODY_TIMEOUT,
) -> None:
    """Serve `app` until `stop` is set; raises if the listener cannot start.

    Slow clients are cut off (`wabus.deadlines`). `X-Forwarded-For` is not read here: uvicorn
    would trust it from loopback by default; an app that sits behind proxies reads it from the
    proxies it was told to trust (the relay: `WABUS_TRUSTED_PROXIES`)."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,  # never emitted (`wabus.logs`), yet its arguments were built per request
        lifespan="on",
        http=deadline_protocol(header_timeout, body_timeout),
        proxy_headers=False,
    )
    server = _Server(config)
    serving = asyncio.create_task(server.serve())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    stopping.cancel()
    await serving
    if not server.started and not stop.is_set():
        raise RuntimeError(f"HTTP listener on {host}:{port} did not start")


def run_until_signal(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run `main(stop)` and set `stop` on SIGINT or SIGTERM, for a graceful shutdown."""

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    asyncio.run(runner())
