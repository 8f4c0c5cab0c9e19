"""Media conversions take turns (`wabus.conversion.in_turn`): at most `CONVERSIONS_AT_ONCE` run
at once, a cancelled caller's conversion keeps its turn until its thread is done, and results
and errors reach their callers. Real threads, gated by events (no timing assumed)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from wabus import conversion
from wabus.conversion import ConversionError, in_turn

WAIT = 10.0
"""Seconds to wait for something that must happen (a generous bound, not a measurement)."""


class Gated:
    """A converter whose calls block until `gate` opens, counting how many run at once."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.started: list[bytes] = []

    def __call__(self, data: bytes) -> bytes:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.started.append(data)
        try:
            if not self.gate.wait(WAIT):
                raise TimeoutError("the test never opened the gate")
            if data == b"bad":
                raise ConversionError("undecodable_media", "not an image")
            return data.upper()
        finally:
            with self.lock:
                self.running -= 1


async def _until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT):
        while not condition():
            await asyncio.sleep(0.005)


async def test_at_most_the_bound_run_at_once_and_all_finish() -> None:
    convert = Gated()
    bound = conversion.CONVERSIONS_AT_ONCE
    inputs = [f"image {number}".encode() for number in range(3 * bound)]
    calls = [asyncio.create_task(in_turn(convert, data)) for data in inputs]
    await _until(lambda: convert.running == bound)  # the bound is reached: not one at a time
    for _ in range(20):  # the loop and the threads get their chances to start more
        await asyncio.sleep(0.005)
    assert len(convert.started) == bound
    convert.gate.set()
    assert await asyncio.gather(*calls) == [data.upper() for data in inputs]
    assert convert.most == bound


async def test_a_cancelled_callers_conversion_keeps_its_turn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(conversion, "CONVERSIONS_AT_ONCE", 1)
    first, second = Gated(), Gated()
    second.gate.set()
    abandoned = asyncio.create_task(in_turn(first, b"first"))
    await _until(lambda: first.running == 1)
    abandoned.cancel()
    with pytest.raises(asyncio.CancelledError):
        await abandoned
    waiting = asyncio.create_task(in_turn(second, b"second"))
    for _ in range(20):
        await asyncio.sleep(0.005)
    assert second.started == []  # the first thread still runs: its turn is not given away
    first.gate.set()
    assert await waiting == b"SECOND"  # positive control: the turn passes once it is done
    assert second.started == [b"second"]


async def test_a_conversions_error_reaches_its_caller_and_frees_its_turn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(conversion, "CONVERSIONS_AT_ONCE", 1)
    convert = Gated()
    convert.gate.set()
    with pytest.raises(ConversionError, match="not an image"):
        await in_turn(convert, b"bad")
    assert await in_turn(convert, b"good") == b"GOOD"
