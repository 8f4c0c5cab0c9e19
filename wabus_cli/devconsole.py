"""What `wabus dev` shows of the sessions while it runs: connection progress, the pairing QR,
and a phone number typed at the terminal turned into a pairing-code request."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from nats.aio.client import Client as NATS

from wabus.natsbus import UNAVAILABLE
from wabus.settings import Settings
from wabus_cli.console import (
    Echo,
    connection_progress,
    events_subject,
    follow,
    request_pair_code,
)

DEFAULT_INSTANCE = "default"


class DevConsole:
    """Shows connection progress as it happens and handles phone pairing for `wabus dev`."""

    def __init__(self, nc: NATS, settings: Settings, echo: Echo, phone: str | None) -> None:
        self._nc = nc
        self._settings = settings
        self._echo = echo
        self._phone = phone
        self._qr_instance: str | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        subject = events_subject(self._settings.topology, None, "connection.>")
        await follow(self._nc, subject, self._echo, self._render)

    def _render(self, envelope: dict[str, Any]) -> str | None:
        if envelope.get("type") == "connection.qr":
            first = self._qr_instance is None
            self._qr_instance = str(envelope.get("instance"))
            if first and self._phone:
                self.pair(self._phone)
                return (
                    f"… {self._qr_instance}: asking WhatsApp for a pairing code for +{self._phone}"
                )
        return connection_progress(envelope, DEFAULT_INSTANCE)

    def pair(self, phone: str) -> None:
        """Ask for a pairing code for the instance that showed the last QR."""
        instance = self._qr_instance or DEFAULT_INSTANCE
        task = asyncio.create_task(self._pair(instance, phone))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pair(self, instance: str, phone: str) -> None:
        try:
            await request_pair_code(self._nc, self._settings.topology, instance, phone)
        except (*UNAVAILABLE, ValueError) as error:  # NATS away, or not a phone number
            self._echo(f"✘ could not ask for a pairing code: {error}")
            return
        self._echo(f"… {instance}: pairing code requested for {phone}; it appears here shortly")

    def on_stdin_line(self, line: str) -> None:
        digits = "".join(ch for ch in line if ch.isdigit())
        if len(digits) >= 8:
            self.pair(digits)
        elif line.strip():
            self._echo(
                "type a phone number with its country code, digits only (e.g. 5511999999999)"
            )


def read_stdin_lines(console: DevConsole) -> bool:
    """Feed typed lines to the console (interactive terminals only); True when installed."""
    if not sys.stdin.isatty():
        return False
    loop = asyncio.get_running_loop()

    def on_readable() -> None:
        line = sys.stdin.readline()
        if line:
            console.on_stdin_line(line)

    loop.add_reader(sys.stdin.fileno(), on_readable)
    return True


def stop_reading_stdin() -> None:
    """Undo `read_stdin_lines` before the loop closes (a reader left behind would outlive it)."""
    asyncio.get_running_loop().remove_reader(sys.stdin.fileno())
