"""`wabus.stickers`: an image in, a WhatsApp sticker (WebP, 512x512) out.

The inputs are made here with Pillow, and every output is read back with Pillow.
"""

from __future__ import annotations

import io
import random
import struct
import zlib

import pytest
from PIL import Image

from wabus import stickers
from wabus.conversion import ConversionError
from wabus.stickers import Sticker, probe_image, to_sticker


def encoded(image: Image.Image, format: str, **options: object) -> bytes:
    output = io.BytesIO()
    image.save(output, format, **options)
    return output.getvalue()


def solid(width: int, height: int, format: str = "PNG") -> bytes:
    return encoded(Image.new("RGB", (width, height), (200, 30, 30)), format)


def animated_webp(size: int = 64, *, noisy: bool = False) -> bytes:
    """Two frames; `noisy` ones, lossless, weigh about 1.5 MB."""
    if noisy:
        noise = random.Random(3)
        frames = [
            Image.frombytes("RGBA", (size, size), noise.randbytes(size * size * 4))
            for _ in range(2)
        ]
    else:
        frames = [Image.new("RGBA", (size, size), color) for color in ("red", "blue")]
    return encoded(
        frames[0],
        "WEBP",
        save_all=True,
        append_images=frames[1:],
        duration=100,
        loop=0,
        lossless=noisy,
    )


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (64, 64), color) for color in ("red", "blue")]
    return encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)


def png_claiming(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header (IHDR, checksum fixed) claims `width` x `height`."""
    data = bytearray(solid(1, 1))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def read_back(sticker: Sticker) -> Image.Image:
    image = Image.open(io.BytesIO(sticker.data))
    assert image.format == "WEBP"
    return image


def refusal(data: bytes) -> ConversionError:
    with pytest.raises(ConversionError) as caught:
        to_sticker(data)
    return caught.value


def test_a_wide_png_is_fitted_and_centred_on_a_transparent_square() -> None:
    sticker = to_sticker(solid(1000, 500))

    assert (sticker.animated, sticker.width, sticker.height) == (False, 512, 512)
    assert len(sticker.data) <= 100 * 1024
    image = read_back(sticker).convert("RGBA")
    assert image.size == (512, 512)
    alpha = image.getchannel("A")
    assert alpha.getpixel((0, 0)) == 0  # corner
    assert alpha.getpixel((256, 60)) == 0  # the margin above: 1000x500 becomes 512x256
    assert alpha.getpixel((256, 256)) == 255  # centre
    assert alpha.getpixel((10, 256)) == 255  # the image reaches the sides
    pixel = image.getpixel((256, 256))
    assert isinstance(pixel, tuple)
    red, green, blue, _ = pixel
    assert red > 150
    assert max(green, blue) < 80


def test_a_square_image_fills_the_canvas() -> None:
    """The control for the margins above: a square leaves none, and a small one is enlarged."""
    image = read_back(to_sticker(solid(100, 100))).convert("RGBA")

    assert image.getchannel("A").getpixel((0, 0)) == 255


def test_a_tall_jpeg_gets_margins_left_and_right() -> None:
    sticker = to_sticker(solid(300, 600, "JPEG"))

    alpha = read_back(sticker).convert("RGBA").getchannel("A")
    assert alpha.getpixel((60, 256)) == 0
    assert alpha.getpixel((256, 10)) == 255
    assert sticker.animated is False


def test_a_jpeg_is_turned_upright_by_its_exif_orientation() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    photo = encoded(Image.new("RGB", (1000, 500), "green"), "JPEG", exif=exif.tobytes())

    alpha = read_back(to_sticker(photo)).convert("RGBA").getchannel("A")

    assert alpha.getpixel((60, 256)) == 0  # now tall: margins left and right
    assert alpha.getpixel((256, 10)) == 255


def test_a_still_gif_and_a_still_webp_are_converted() -> None:
    gif = to_sticker(solid(80, 40, "GIF"))
    webp = to_sticker(solid(80, 40, "WEBP"))

    assert (gif.animated, gif.width, gif.height) == (False, 512, 512)
    assert (webp.animated, webp.width, webp.height) == (False, 512, 512)


def test_a_noisy_photo_is_brought_under_100_kb_by_lowering_the_quality(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    noise = random.Random(5).randbytes(1000 * 1000 * 3)
    photo = encoded(Image.frombytes("RGB", (1000, 1000), noise), "JPEG", quality=95)

    sticker = to_sticker(photo)

    assert len(sticker.data) <= 100 * 1024
    monkeypatch.setattr(stickers, "QUALITIES", stickers.QUALITIES[:1])
    assert refusal(photo).code == "media_too_large"  # the first quality alone is not enough


def test_a_sticker_over_100_kb_at_the_lowest_quality_is_refused() -> None:
    noise = random.Random(5).randbytes(512 * 512 * 4)  # noise in the alpha channel too
    image = encoded(Image.frombytes("RGBA", (512, 512), noise), "PNG")

    error = refusal(image)

    assert error.code == "media_too_large"
    assert "100 KB" in error.reason


def test_an_animated_webp_passes_through_unchanged() -> None:
    data = animated_webp()

    sticker = to_sticker(data)

    assert sticker.data == data
    assert (sticker.animated, sticker.width, sticker.height) == (True, 64, 64)


@pytest.mark.parametrize(
    ("data", "what"),
    [(animated_webp(600), "600x600"), (animated_webp(512, noisy=True), "KB")],
    ids=["too-wide", "too-heavy"],
)
def test_an_animated_webp_that_does_not_fit_is_refused(data: bytes, what: str) -> None:
    error = refusal(data)

    assert error.code == "media_too_large"
    assert what in error.reason
    assert to_sticker(animated_webp(512)).animated  # the control: 512x512 and light passes


def test_an_animated_gif_is_refused() -> None:
    error = refusal(animated_gif())

    assert error.code == "unsupported_media"
    assert "animated GIF" in error.reason
    assert not to_sticker(solid(64, 64, "GIF")).animated  # the control: a still GIF passes


@pytest.mark.parametrize("format", ["BMP", "TIFF"])
def test_other_formats_are_unsupported(format: str) -> None:
    error = refusal(solid(64, 64, format))

    assert error.code == "unsupported_media"
    assert format in error.reason
    to_sticker(solid(64, 64, "PNG"))  # the control


@pytest.mark.parametrize(
    "data",
    [b"", random.Random(7).randbytes(4096), solid(300, 300)[:200]],
    ids=["empty", "random", "truncated-png"],
)
def test_unreadable_bytes_are_undecodable(data: bytes) -> None:
    error = refusal(data)

    assert error.code == "undecodable_media"
    to_sticker(solid(300, 300))  # the control


def test_a_header_claiming_ten_billion_pixels_is_refused_before_decoding() -> None:
    error = refusal(png_claiming(100_000, 100_000))

    assert error.code == "media_too_large"
    assert "pixels" in error.reason
    to_sticker(png_claiming(1, 1))  # the control: the checksum fix makes a valid PNG


def test_an_image_far_over_pillows_pixel_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    image = solid(200, 200)  # 40,000 pixels
    to_sticker(image)  # the control, under the default limit

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # over twice: Pillow's error
    error = refusal(image)

    assert error.code == "media_too_large"


def test_an_image_just_over_pillows_pixel_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Between the limit and twice it, Pillow only warns: refused whether or not warnings
    are errors (they are under pytest here)."""
    image = solid(200, 200)  # 40,000 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 30_000)

    assert refusal(image).code == "media_too_large"  # the warning raised as an error
    with pytest.warns(Image.DecompressionBombWarning):  # the warning only warns
        assert refusal(image).code == "media_too_large"
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40_000)
    to_sticker(image)  # the control: at the limit exactly


def test_our_own_pixel_ceiling_applies_below_pillows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stickers, "MAX_SOURCE_PIXELS", 30_000)

    error = refusal(solid(200, 200))

    assert error.code == "media_too_large"
    assert "200x200" in error.reason
    to_sticker(solid(100, 100))  # the control


@pytest.mark.parametrize(
    "data",
    [solid(1000, 500), solid(300, 600, "JPEG"), solid(80, 40, "GIF"), animated_webp()],
    ids=["png", "jpeg", "gif", "animated-webp"],
)
def test_probe_accepts_what_converts(data: bytes) -> None:
    probe_image(data)
    to_sticker(data)


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (random.Random(7).randbytes(4096), "undecodable_media"),
        (solid(300, 300)[:200], "undecodable_media"),
        (solid(64, 64, "BMP"), "unsupported_media"),
        (animated_gif(), "unsupported_media"),
        (animated_webp(600), "media_too_large"),
        (png_claiming(100_000, 100_000), "media_too_large"),
    ],
    ids=["random", "truncated-png", "bmp", "animated-gif", "wide-animation", "bomb"],
)
def test_probe_refuses_what_would_be_refused(data: bytes, code: str) -> None:
    with pytest.raises(ConversionError) as caught:
        probe_image(data)

    assert caught.value.code == code
    probe_image(solid(64, 64))  # the control
