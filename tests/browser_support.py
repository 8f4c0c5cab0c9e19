"""Real parts for the dashboard's browser tests: Debian's Chromium driven by Playwright (never a
downloaded browser), and an event loop in a background thread for the webhook receiver and the
test's own NATS client, since Playwright's sync API runs the test itself outside any loop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")

FAILED = pytest.StashKey[bool]()
"""Set on a test item once its call ran: whether it failed (`tests/e2e/conftest.py`)."""

CHROMIUM_ENV = "WABUS_CHROMIUM"
DEFAULT_CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    # no look-ups of Chromium's own (update checks, …): the tests run offline
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
]


def chromium_path() -> str:
    """The system's Chromium (`WABUS_CHROMIUM` overrides); a clear failure when it is missing,
    never a skip: `.ci/run` installs it."""
    path = os.environ.get(CHROMIUM_ENV) or shutil.which("chromium") or DEFAULT_CHROMIUM
    if not Path(path).exists():
        raise AssertionError(
            f"no Chromium at {path}: install Debian's `chromium` (as .ci/run does) "
            f"or point {CHROMIUM_ENV} at one"
        )
    return path


class LoopThread:
    """An event loop in a daemon thread; `run` waits for a coroutine on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@contextlib.contextmanager
def loop_thread() -> Iterator[LoopThread]:
    thread = LoopThread()
    try:
        yield thread
    finally:
        thread.close()


@contextlib.contextmanager
def entered(thread: LoopThread, manager: contextlib.AbstractAsyncContextManager[T]) -> Iterator[T]:
    """An async context manager entered and exited on the loop thread."""
    value = thread.run(manager.__aenter__())
    try:
        yield value
    finally:
        thread.run(manager.__aexit__(None, None, None))
