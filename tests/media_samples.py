"""Media made on the spot for tests: a tone as WAV (written by the stdlib, no codec involved) and
plain-coloured images (Pillow)."""

from __future__ import annotations

import io
import math
import struct
import wave

from PIL import Image


def wav_tone(seconds: float = 2.0, rate: int = 8000, channels: int = 1) -> bytes:
    """A 440 Hz tone as a 16-bit PCM WAV file."""
    out = io.BytesIO()
    with wave.open(out, "wb") as sink:
        sink.setnchannels(channels)
        sink.setsampwidth(2)
        sink.setframerate(rate)
        frames = bytearray()
        for n in range(int(seconds * rate)):
            sample = int(8000 * math.sin(2 * math.pi * 440 * n / rate))
            frames += struct.pack("<h", sample) * channels
        sink.writeframes(bytes(frames))
    return out.getvalue()


def image_bytes(kind: str = "PNG", width: int = 40, height: int = 20) -> bytes:
    """A plain red image of `kind` (PNG with alpha, JPEG without)."""
    mode = "RGB" if kind == "JPEG" else "RGBA"
    out = io.BytesIO()
    Image.new(mode, (width, height), (200, 30, 30, 255)[: len(mode)]).save(out, kind)
    return out.getvalue()
