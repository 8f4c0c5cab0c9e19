"""Group photos as WhatsApp takes them (`connector.images`): the centre square, at most
640 x 640, a JPEG, whatever image format the caller sent."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image
from pydantic import ValidationError

from connector.images import GROUP_PHOTO_SIDE, group_photo_jpeg
from schemas.queries import GroupSettings


def encoded(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def read_back(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.mark.parametrize(
    ("size", "fmt", "mode", "expected"),
    [
        ((1000, 500), "PNG", "RGBA", (500, 500)),  # wide: its centre square
        ((300, 900), "WEBP", "RGB", (300, 300)),  # tall
        ((2000, 2000), "GIF", "P", (GROUP_PHOTO_SIDE, GROUP_PHOTO_SIDE)),  # scaled down
        ((800, 600), "JPEG", "RGB", (600, 600)),  # a JPEG too: cropped and bounded
        ((64, 64), "PNG", "LA", (64, 64)),  # small: not enlarged
    ],
)
def test_a_group_photo_is_a_square_jpeg_of_at_most_640(
    size: tuple[int, int], fmt: str, mode: str, expected: tuple[int, int]
) -> None:
    source = Image.new("RGB", size, "red").convert(mode)
    photo = read_back(group_photo_jpeg(encoded(source, fmt)) or b"")
    assert photo.format == "JPEG"
    assert photo.size == expected


def test_transparency_becomes_white_and_the_centre_is_what_is_kept() -> None:
    source = Image.new("RGBA", (300, 100), (0, 0, 0, 0))  # transparent (black) all round
    source.paste((0, 0, 255, 255), (125, 25, 175, 75))  # an opaque blue spot in the centre
    photo = read_back(group_photo_jpeg(encoded(source, "PNG")) or b"").convert("RGB")
    assert photo.size == (100, 100)
    centre, corner = photo.getpixel((50, 50)), photo.getpixel((5, 5))
    assert isinstance(centre, tuple)
    assert isinstance(corner, tuple)
    red, green, blue = centre  # the centre: blue
    assert blue > 200
    assert max(red, green) < 60
    assert min(corner) > 240  # transparent: white, not black


@pytest.mark.parametrize(
    "data",
    [
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 64,  # a PNG's signature, then garbage
        b"not an image at all",
        encoded(Image.new("RGB", (8, 8)), "BMP"),  # a format WhatsApp users do not send
        encoded(Image.new("1", (5000, 5000)), "PNG"),  # a few KiB declaring 25 M pixels
    ],
)
def test_what_cannot_be_read_as_an_allowed_image_is_refused(data: bytes) -> None:
    assert group_photo_jpeg(data) is None


@pytest.mark.parametrize(
    ("fmt", "accepted"),
    [("JPEG", True), ("PNG", True), ("WEBP", True), ("GIF", True), ("BMP", False), ("TIFF", False)],
)
def test_the_query_takes_the_formats_the_connector_converts(fmt: str, accepted: bool) -> None:
    photo = base64.b64encode(encoded(Image.new("RGB", (16, 16), "green"), fmt)).decode()
    group = "120363000000000001@g.us"
    if accepted:
        assert GroupSettings(group=group, photo_base64=photo).photo_base64 == photo
    else:
        with pytest.raises(ValidationError, match="JPEG, PNG, WebP or GIF"):
            GroupSettings(group=group, photo_base64=photo)


def test_a_riff_file_that_is_not_webp_is_refused() -> None:
    wave = b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 32
    with pytest.raises(ValidationError, match="not WebP"):
        GroupSettings(group="120363000000000001@g.us", photo_base64=base64.b64encode(wave).decode())
