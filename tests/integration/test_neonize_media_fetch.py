"""Media to send by URL: fetched through the SSRF guard from a real local server, size-capped."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from connector.engine import SendError
from connector.engines.neonize_outbound import fetch_media, load_media
from schemas.commands import SendAudio, SendImage
from tests.support import running

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)
PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489")


def media_app() -> Starlette:
    async def image(request: Request) -> Response:
        return Response(PNG, media_type="image/png")

    async def voice(request: Request) -> Response:
        return Response(b"OggS" + b"\0" * 60, media_type="audio/ogg")

    async def huge(request: Request) -> Response:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(64):
                yield b"x" * 1024

        return StreamingResponse(chunks(), media_type="application/octet-stream")

    async def missing(request: Request) -> Response:
        return Response(status_code=404)

    async def broken(request: Request) -> Response:
        return Response(status_code=503)

    async def redirect(request: Request) -> Response:
        return Response(status_code=302, headers={"Location": "http://169.254.169.254/"})

    return Starlette(
        routes=[
            Route("/image.png", image),
            Route("/voice", voice),
            Route("/huge", huge),
            Route("/missing", missing),
            Route("/broken", broken),
            Route("/redirect", redirect),
        ]
    )


async def test_an_allowed_url_is_fetched_with_its_type() -> None:
    async with running(media_app()) as url:
        data, content_type = await fetch_media(f"{url}/image.png", LOOPBACK)
        send = SendImage(type="image", to="4915112345678", url=f"{url}/image.png")
        loaded = await load_media(send, LOOPBACK)
        voice = SendAudio(type="audio", to="4915112345678", url=f"{url}/voice", voice=True)
        voice_type = (await load_media(voice, LOOPBACK))[1]
    assert (data, content_type) == (PNG, "image/png")
    assert loaded == (PNG, "image/png")
    assert voice_type == "audio/ogg; codecs=opus"


async def test_private_addresses_are_refused_without_an_allow_list() -> None:
    async with running(media_app()) as url:
        with pytest.raises(SendError) as by_address:
            await fetch_media(f"{url}/image.png")
        with pytest.raises(SendError) as by_name:
            await fetch_media(f"{url.replace('127.0.0.1', 'localhost')}/image.png")
    assert by_address.value.code == by_name.value.code == "media_blocked"


async def test_media_over_the_cap_is_refused_while_streaming() -> None:
    async with running(media_app()) as url:
        with pytest.raises(SendError) as too_large:
            await fetch_media(f"{url}/huge", LOOPBACK, limit=10_000)
        data, _ = await fetch_media(f"{url}/huge", LOOPBACK, limit=64 * 1024)
    assert too_large.value.code == "media_too_large"
    assert len(data) == 64 * 1024


@pytest.mark.parametrize(
    ("path", "retryable"), [("/missing", False), ("/broken", True), ("/redirect", False)]
)
async def test_failed_fetches_say_whether_to_retry(path: str, retryable: bool) -> None:
    async with running(media_app()) as url:
        with pytest.raises(SendError) as failed:
            await fetch_media(f"{url}{path}", LOOPBACK)
    assert failed.value.code == "media_fetch_failed"
    assert failed.value.retryable is retryable
