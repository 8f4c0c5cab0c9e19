"""What the media converters (`wabus.voice`, `wabus.stickers`, the connector's images) share:
their error, and the bound on how many run at once.

A conversion is refused with a stable `code`, which callers map to their answer (the HTTP API
answers 422 with it), and a `reason` in prose naming what is wrong with the input.
"""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import Callable
from typing import Literal, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

CONVERSIONS_AT_ONCE = max(2, os.cpu_count() or 2)
"""Conversions running at once in one process (the others wait their turn in the event loop).

Why: a conversion may hold hundreds of MB while it runs (a sticker's source of 50 M pixels
decodes to 200 MB, a group photo of 16 M to 64 MB) and a core of CPU, and the connector's
thread pool is sized for its sessions, not for this: many sends with media at once, from one
tenant or several, must queue rather than grow the process until the kernel kills it and every
session with it. More at once than cores would not finish sooner."""

ConversionCode = Literal[
    "unsupported_media",  # readable, but not a kind the converter takes (an image sent as audio)
    "undecodable_media",  # not readable at all: garbage, truncated, corrupt
    "media_too_long",  # audio longer than the converter's limit
    "media_too_large",  # too many pixels or bytes (decompression bombs, oversized stickers)
]

CONVERSION_CODES: frozenset[ConversionCode] = frozenset(
    ("unsupported_media", "undecodable_media", "media_too_long", "media_too_large")
)


class ConversionError(Exception):
    """Input a converter refuses: `code` is one of `CONVERSION_CODES`, `reason` is prose."""

    def __init__(self, code: ConversionCode, reason: str) -> None:
        super().__init__(code, reason)  # both in `args`: the error pickles (worker processes)
        self.code: ConversionCode = code
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.code}: {self.reason}"


_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


async def in_turn(convert: Callable[P, T], *args: P.args, **options: P.kwargs) -> T:
    """`convert(*args, **options)` in a worker thread, at most `CONVERSIONS_AT_ONCE` at a time
    per event loop. A conversion keeps its turn until its thread is done, also when its caller
    was cancelled meanwhile (a thread cannot be stopped): the bound holds for what runs."""
    loop = asyncio.get_running_loop()
    slots = _slots.get(loop)
    if slots is None:
        slots = _slots[loop] = asyncio.Semaphore(CONVERSIONS_AT_ONCE)
    await slots.acquire()
    work = asyncio.ensure_future(asyncio.to_thread(convert, *args, **options))
    work.add_done_callback(lambda done: _turn_over(slots, done))
    return await asyncio.shield(work)


def _turn_over(slots: asyncio.Semaphore, work: asyncio.Future[T]) -> None:
    """The thread is done: its turn goes to the next. Reading its error here only keeps asyncio
    from reporting it as never retrieved when the caller was cancelled (nobody wants that
    conversion any more); a caller still waiting gets the error through the shield as usual."""
    slots.release()
    if not work.cancelled():
        work.exception()
