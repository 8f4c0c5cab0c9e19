"""Images re-encoded as the JPEGs WhatsApp shows: link-preview thumbnails and group photos.

Only JPEG, PNG, GIF and WebP are opened (not every plugin Pillow has: some hand the bytes to
outside programs), and an image that declares more than `MAX_IMAGE_PIXELS` is not decoded (a
small file can declare a huge canvas; Pillow's own decompression-bomb limit is far higher).
"""

from __future__ import annotations

import io

from PIL import Image, ImageOps

MAX_IMAGE_PIXELS = 16_000_000
IMAGE_FORMATS = ("JPEG", "PNG", "GIF", "WEBP")
GROUP_PHOTO_SIDE = 640
"""WhatsApp's profile and group pictures are 640 x 640 JPEGs (what its own apps upload)."""


def as_jpeg(data: bytes, side: int, *, square: bool = False) -> bytes | None:
    """`data` (a JPEG, PNG, GIF or WebP image) as a JPEG at most `side` pixels on its longer
    side — with `square`, its centre cropped to a square first — transparency flattened onto
    white; None when it is not such an image, is broken, or declares more than
    `MAX_IMAGE_PIXELS` (Pillow's decompression-bomb error and warning included — the warning
    is an error under pytest)."""
    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as opened:
            if opened.width * opened.height > MAX_IMAGE_PIXELS:
                return None
            opened.draft("RGB", (side, side))  # JPEG: decode at a reduced scale already
            image = ImageOps.exif_transpose(opened)
            if square:
                edge = min(image.size)
                image = ImageOps.fit(image, (edge, edge))
            image.thumbnail((side, side))
            if image.mode in {"RGBA", "LA", "PA"} or "transparency" in image.info:
                rgba = image.convert("RGBA")
                flat = Image.new("RGB", rgba.size, "white")
                flat.paste(rgba, mask=rgba.getchannel("A"))
            else:
                flat = image.convert("RGB")
            out = io.BytesIO()
            flat.save(out, "JPEG", quality=80, optimize=True)
    except Exception:  # garbage, truncated, a bomb: Pillow raises many kinds; no image
        return None
    return out.getvalue()


def group_photo_jpeg(data: bytes) -> bytes | None:
    """A group photo as WhatsApp takes it: the centre square, at most 640 x 640, JPEG."""
    return as_jpeg(data, GROUP_PHOTO_SIDE, square=True)
