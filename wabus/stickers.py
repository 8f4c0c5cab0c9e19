"""Turning an image into a WhatsApp sticker: WebP on a transparent 512x512 canvas.

Why: callers have PNGs and JPEGs; WhatsApp shows a sticker only as WebP, 512x512, a static one
within 100 KB, an animated one within 500 KB. A still image is fitted inside the square
(keeping its aspect ratio, scaled up or down), centred on a transparent canvas and encoded as
WebP, at a lower quality when the first try is over 100 KB. An animated WebP is sent as it
is, when it already fits; animations are not re-encoded here.

Inputs are untrusted: only PNG, JPEG, WebP and GIF are decoded (other formats are refused by
their header, before any pixel is read), and an image claiming more pixels than
`Image.MAX_IMAGE_PIXELS` (or `MAX_SOURCE_PIXELS`, the lower) is refused before it is
decoded — Pillow's own decompression-bomb guard. Both functions are CPU-bound and blocking:
call them from a worker thread (`asyncio.to_thread`), not the loop.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from wabus.conversion import ConversionError

SIZE = 512
"""A sticker's side, in pixels."""
MAX_STATIC_BYTES = 100 * 1024
MAX_ANIMATED_BYTES = 500 * 1024
QUALITIES = ((80, 100), (70, 70), (60, 60), (50, 50), (40, 40), (30, 30))
"""(quality, alpha_quality) of the WebP tried in turn until a static sticker fits in
`MAX_STATIC_BYTES`: the alpha channel is lossless at first, lossy only when needed."""
MAX_SOURCE_PIXELS = 50_000_000
"""A ceiling below Pillow's (89 million): a 48-megapixel phone photo still passes."""
STILL_FORMATS = frozenset(("PNG", "JPEG", "MPO", "WEBP", "GIF"))
"""What Pillow calls the formats taken (MPO: the multi-picture JPEG some cameras write; its
first picture is the photo)."""

_UNREADABLE = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error)
"""What Pillow raises, from the header on, for input it cannot read (truncated, corrupt)."""


@dataclass(frozen=True)
class Sticker:
    data: bytes
    """WebP."""
    animated: bool
    width: int
    height: int


def to_sticker(data: bytes) -> Sticker:
    """A sticker made of `data` (PNG, JPEG, WebP, still GIF; or an animated WebP that fits).
    Raises `ConversionError`: `unsupported_media` (another format, an animated GIF or PNG),
    `undecodable_media` (unreadable), `media_too_large` (too many pixels, or an animated WebP
    over 512x512 or 500 KB, or a still that stays over 100 KB at the lowest quality)."""
    image = _open(data)
    if _animated(image, len(data)):
        _load(image)
        return Sticker(data=data, animated=True, width=image.width, height=image.height)
    if image.format in ("JPEG", "MPO"):
        image.draft("RGB", (SIZE, SIZE))  # decode a big photo at 1/2, 1/4 or 1/8 scale
    _load(image)
    try:
        upright = ImageOps.exif_transpose(image)
        fitted = ImageOps.contain(upright.convert("RGBA"), (SIZE, SIZE), Image.Resampling.LANCZOS)
    except _UNREADABLE as error:
        raise ConversionError(
            "undecodable_media", f"the {image.format} image cannot be converted: {error}"
        ) from error
    canvas = Image.new("RGBA", (SIZE, SIZE), (0, 0, 0, 0))
    canvas.paste(fitted, ((SIZE - fitted.width) // 2, (SIZE - fitted.height) // 2))
    for quality, alpha_quality in QUALITIES:
        output = io.BytesIO()
        # method 4 (the default): 6 saves ~1 % and can take seconds on a noisy alpha channel
        canvas.save(output, "WEBP", quality=quality, alpha_quality=alpha_quality, method=4)
        if output.tell() <= MAX_STATIC_BYTES:
            return Sticker(data=output.getvalue(), animated=False, width=SIZE, height=SIZE)
    raise ConversionError(
        "media_too_large",
        f"the sticker is still {output.tell() // 1024} KB at WebP quality {QUALITIES[-1][0]}, "
        f"over the {MAX_STATIC_BYTES // 1024} KB a static sticker may have",
    )


def probe_image(data: bytes) -> None:
    """Raise `ConversionError` unless `data` looks like an image `to_sticker` takes: its header
    read, its format and size checked, and its structure verified where Pillow can without
    decoding (PNG checksums). Cheap, for answering before anything is queued."""
    image = _open(data)
    _animated(image, len(data))
    try:
        image.verify()
    except _UNREADABLE as error:
        raise ConversionError(
            "undecodable_media", f"the {image.format} image is corrupt: {error}"
        ) from error


def _open(data: bytes) -> Image.Image:
    """The image, its header read and checked, no pixel decoded yet."""
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as error:
        raise ConversionError(
            "undecodable_media", "not an image Pillow can read: no known format's header matches"
        ) from error
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        # The warning arrives here only where warnings are errors; elsewhere Pillow warns,
        # and the pixel count below refuses the image.
        raise ConversionError(
            "media_too_large", f"the image has too many pixels: {error}"
        ) from error
    except _UNREADABLE as error:
        raise ConversionError(
            "undecodable_media", f"not an image Pillow can read: {error}"
        ) from error
    if image.format not in STILL_FORMATS:
        raise ConversionError(
            "unsupported_media",
            f"a {image.format or 'unknown'} image; stickers are made of PNG, JPEG, WebP or GIF",
        )
    limit = min(MAX_SOURCE_PIXELS, Image.MAX_IMAGE_PIXELS or MAX_SOURCE_PIXELS)
    if image.width * image.height > limit:
        raise ConversionError(
            "media_too_large",
            f"the image is {image.width}x{image.height}, more than {limit} pixels",
        )
    return image


def _animated(image: Image.Image, size: int) -> bool:
    """Whether `image` is an animated WebP that may be sent as it is; refuses other
    animations (GIF, PNG), and animated WebPs too big to be a sticker."""
    try:
        animated = image.format != "MPO" and bool(getattr(image, "is_animated", False))
    except _UNREADABLE as error:
        raise ConversionError(
            "undecodable_media", f"the {image.format} image is corrupt: {error}"
        ) from error
    if not animated:
        return False
    if image.format != "WEBP":
        raise ConversionError(
            "unsupported_media",
            f"an animated {image.format}; animated stickers must be animated WebP",
        )
    if image.width > SIZE or image.height > SIZE or size > MAX_ANIMATED_BYTES:
        raise ConversionError(
            "media_too_large",
            f"the animated WebP is {image.width}x{image.height} and {size // 1024} KB; an "
            f"animated sticker may be at most {SIZE}x{SIZE} and {MAX_ANIMATED_BYTES // 1024} KB",
        )
    return True


def _load(image: Image.Image) -> None:
    try:
        image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ConversionError(
            "media_too_large", f"the image has too many pixels: {error}"
        ) from error
    except _UNREADABLE as error:
        raise ConversionError(
            "undecodable_media", f"the {image.format} image does not decode: {error}"
        ) from error
