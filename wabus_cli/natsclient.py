"""The NATS connection of a short-lived command (`wabus tail`, `wabus sim`): one line when NATS
is not there, one when it goes away and one when it is back — nats-py's own error logging (a
traceback per reconnect attempt) never reaches the terminal."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import nats.errors
from nats.aio.client import Client as NATS

from wabus.logs import shown_url
from wabus.natsbus import UNAVAILABLE
from wabus_cli.console import Echo

FIRST_CONNECT_WITHIN = 3.0
"""Seconds to find NATS at start; after that the connection is kept through restarts forever."""
RECONNECT_EVERY = 0.5
"""Seconds between reconnect attempts: a restarted NATS is found again within this."""


CONNECTION_LOST = (
    OSError,
    asyncio.TimeoutError,
    nats.errors.UnexpectedEOF,
    nats.errors.StaleConnectionError,
    nats.errors.ConnectionClosedError,
    nats.errors.NoServersError,
)
"""What nats-py reports as errors when the server goes away or a reconnect attempt fails."""


class NatsUnreachable(Exception):
    def __init__(self, url: str, cause: BaseException) -> None:
        super().__init__(f"NATS at {shown_url(url)} does not answer ({describe(cause)})")


def describe(error: BaseException) -> str:
    """An error as a person reads it: its message, or its kind when it has none."""
    return str(error) or type(error).__name__


async def connect_cli(url: str, name: str, echo: Echo, **options: Any) -> NATS:
    """Connected to `url`, or `NatsUnreachable` within `FIRST_CONNECT_WITHIN` seconds.

    Once connected, an outage is reported by `echo` in one line, the return in another; errors
    while connected (a permission the user lacks, …) are said once each."""
    shown = shown_url(url)
    nc = NATS()
    last_failure: deque[BaseException] = deque(maxlen=1)
    said: set[str] = set()

    async def on_error(error: Exception) -> None:
        if not nc.is_connected or isinstance(error, CONNECTION_LOST):
            last_failure.append(error)  # the outage line (or the refusal at start) covers it
            return
        if describe(error) not in said:
            said.add(describe(error))
            echo(f"… NATS at {shown}: {describe(error)}")

    async def on_disconnect() -> None:
        if not nc.is_closed:  # closing it ourselves is not an outage
            echo(f"… NATS at {shown} went away: reconnecting (Ctrl-C to stop)")

    async def on_reconnect() -> None:
        echo(f"… NATS at {shown} is back")

    try:
        await asyncio.wait_for(
            nc.connect(
                url,
                name=name,
                max_reconnect_attempts=-1,
                reconnect_time_wait=RECONNECT_EVERY,  # type: ignore[arg-type]  # a float works
                error_cb=on_error,
                disconnected_cb=on_disconnect,
                reconnected_cb=on_reconnect,
                **options,
            ),
            FIRST_CONNECT_WITHIN,
        )
    except (*UNAVAILABLE, OSError) as error:
        await close_quietly(nc)
        raise NatsUnreachable(url, last_failure[0] if last_failure else error) from error
    return nc


async def close_quietly(nc: NATS) -> None:
    """Close `nc` on the way out; one that cannot close cleanly is closed all the same."""
    try:
        await nc.close()
    except (*UNAVAILABLE, OSError):  # never connected, or the server went away meanwhile
        pass
