"""Rendering a WhatsApp QR payload as PNG or SVG with segno (pure Python, no Pillow needed)."""

from __future__ import annotations

import io

import segno


def render(payload: str, kind: str, scale: int) -> bytes:
    """`kind` is `png` or `svg`; a quiet zone of 4 modules, as scanners expect."""
    code = segno.make_qr(payload, error="l")
    buffer = io.BytesIO()
    if kind == "svg":
        code.save(buffer, kind="svg", scale=scale, border=4, xmldecl=False, svgns=True)
    else:
        code.save(buffer, kind="png", scale=scale, border=4)
    return buffer.getvalue()
