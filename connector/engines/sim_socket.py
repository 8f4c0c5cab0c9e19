"""The sim network's rule that a linked device has one connection at a time.

WhatsApp lets one socket per device in: a second connection replaces the first
(`stream_replaced`), so two connectors running one instance fight over it. Connectors that share
a sim data directory stand for one network: a connection takes an exclusive `flock` on the
device's socket file and gives it up when it ends; the kernel drops the lock of a killed process,
as the network drops a dead client's socket. A connection that finds the lock taken is recorded in
`<instance>.conflicts.jsonl`, which the scale-out tests require to stay empty.
"""

from __future__ import annotations

import fcntl
import json
import os
import weakref
from datetime import UTC, datetime
from pathlib import Path

from wabus.logs import get_logger

log = get_logger(__name__)


class DeviceSocket:
    def __init__(self, directory: Path, instance: str) -> None:
        self._path = directory / f"{instance}.socket"
        self._conflicts = directory / f"{instance}.conflicts.jsonl"
        self._instance = instance
        self._held: weakref.finalize[[int], DeviceSocket] | None = None
        """Closes the locked descriptor: at disconnect, or when a session is dropped unended."""

    def connect(self) -> None:
        """Take the device's socket; record a conflict when another connection holds it."""
        if self._held is not None and self._held.alive:
            return
        descriptor = os.open(self._path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            self._record_conflict()
            return
        self._held = weakref.finalize(self, os.close, descriptor)

    def disconnect(self) -> None:
        if self._held is not None:
            self._held()  # closing the descriptor drops the lock
            self._held = None

    def conflicts(self) -> list[dict[str, object]]:
        if not self._conflicts.exists():
            return []
        return [json.loads(line) for line in self._conflicts.read_text().splitlines() if line]

    def _record_conflict(self) -> None:
        now = datetime.now(UTC).isoformat()
        entry = {"instance": self._instance, "pid": os.getpid(), "at": now}
        with self._conflicts.open("a") as file:
            file.write(json.dumps(entry) + "\n")
        log.error(
            "sim: the device is already connected from another connection; WhatsApp would "
            "replace one with the other (stream_replaced)",
            instance=self._instance,
        )
