"""The error of the media converters (`wabus.voice`, `wabus.stickers`), shared by both.

A conversion is refused with a stable `code`, which callers map to their answer (the HTTP API
answers 422 with it), and a `reason` in prose naming what is wrong with the input.
"""

from __future__ import annotations

from typing import Literal

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
