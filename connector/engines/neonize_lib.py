"""neonize, imported once and kept quiet: every other module of the engine imports it from here.

Importing any part of neonize loads its Go library and calls `logging.basicConfig(level=INFO)`,
which would add a second handler to the root logger wabus configured, and it leaves a
subprocess pipe open. This module snapshots the
root logger around the import and restores it, and lowers neonize's own loggers so the Go side
(which reads the level of `neonize.utils.log` when a client connects) does not forward its debug
lines. `NeonizeClient` is neonize's client as wabus uses it. Nothing here connects anything.
"""

from __future__ import annotations

import ctypes
import io
import logging
import os
import shlex
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager

LIBRARY_LOG_LEVEL = logging.WARNING
"""neonize's and whatsmeow's loggers: warnings and errors reach wabus's log, chatter does not."""


@contextmanager
def root_logging_kept() -> Iterator[None]:
    """Undo whatever an import does to the root logger's handlers and level."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


@contextmanager
def popen_closed() -> Iterator[None]:
    """Let `os.popen` answer from a finished process: neonize's platform probe reads
    `os.popen("uname -a")` at import and never closes it, which leaves a pipe and a running
    `Popen` behind (ResourceWarnings that surface later, wherever the next subprocess starts)."""

    def finished(command: str, mode: str = "r", buffering: int = -1) -> io.StringIO:
        done = subprocess.run(  # noqa: S603 - neonize's own fixed probe command, no shell
            shlex.split(command), capture_output=True, text=True, check=False
        )
        return io.StringIO(done.stdout)

    original = os.popen
    os.popen = finished  # type: ignore[assignment]
    try:
        yield
    finally:
        os.popen = original


def quiet_library_logs(level: int = LIBRARY_LOG_LEVEL) -> None:
    """Set neonize's and whatsmeow's loggers to `level`; call again before each connect, since
    the Go side reads the level then (a later `configure_logging` does not touch these)."""
    for name in ("neonize", "neonize.utils.log", "whatsmeow", "Whatsmeow"):
        logging.getLogger(name).setLevel(level)
    # ffmpeg is only needed by neonize's own media helpers, which wabus does not use.
    logging.getLogger("neonize.utils.ffmpeg").setLevel(logging.ERROR)


with root_logging_kept(), popen_closed():
    from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
    from neonize.aioze import events as aio_events
    from neonize.aioze.client import NewAClient
    from neonize.events import EVENT_TO_INT, INT_TO_EVENT
    from neonize.exc import NeonizeError
    from neonize.proto import Neonize_pb2 as nz
    from neonize.proto.waCommon import WACommon_pb2 as wa_common
    from neonize.proto.waE2E import WAWebProtobufsE2E_pb2 as e2e
    from neonize.utils.enum import (
        BlocklistAction,
        ChatPresence,
        ChatPresenceMedia,
        ClientName,
        ClientType,
        MediaType,
        ParticipantChange,
        ReceiptType,
    )

quiet_library_logs()


class NeonizeClient(NewAClient):  # type: ignore[misc]
    """neonize's client, with whatsmeow's QR-channel result (`success`, `timeout`, `err-…`)
    forwarded instead of dropped (the callback runs on a Go thread), and without neonize's
    stop-on-garbage-collection: stopping a client whose Go side has not reached its event loop
    makes Go dereference a deleted client later, so the owner alone decides when to stop."""

    login_status: Callable[[str], None] | None = None

    def __init__(self, name: str, uuid: str) -> None:
        super().__init__(name, uuid=uuid)
        self._stop_finalizer.detach()

    def _NewAClient__onLoginStatus(self, uuid: int, status: int) -> None:
        callback = self.login_status
        if callback is not None and status:
            callback(ctypes.string_at(status).decode(errors="replace"))

    @property
    def stoppable(self) -> bool:
        """Whether Go's `Stop` is safe: neonize's connect never started, has returned, or reached
        its event loop (it then has sent the device, `me`). Before that, neonize's `Neonize()`
        looks the client up again once `Connect` returns (`FetchMe`), and a stopped client is a
        nil pointer there."""
        task = self.connect_task
        return task is None or task.done() or self.me is not None


__all__ = [
    "EVENT_TO_INT",
    "INT_TO_EVENT",
    "BlocklistAction",
    "ChatPresence",
    "ChatPresenceMedia",
    "ClientName",
    "ClientType",
    "DecodeError",
    "MediaType",
    "NeonizeClient",
    "NeonizeError",
    "NewAClient",
    "ParticipantChange",
    "ReceiptType",
    "aio_events",
    "e2e",
    "nz",
    "quiet_library_logs",
    "root_logging_kept",
    "wa_common",
]
