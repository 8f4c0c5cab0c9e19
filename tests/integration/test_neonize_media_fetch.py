"""Media to send by URL: fetched through the SSRF guard from a real local server, size-capped.

The fetch is `connector.fetch.fetch_bytes` (raising `FetchError`); a media send reaches it
through `connector.preparation.load_media`, which turns its failures into `SendError`s with
the same code and retryability, and picks the mimetype (declared, else the URL's content type,
else sniffed)."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator, Sequence

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from connector.engine import SendError
from connector.fetch import Fetched, FetchError, fetch_bytes
from connector.preparation import FETCH_TIMEOUT, load_media
from schemas.commands import MAX_MEDIA_BYTES, SendAudio, SendDocument, SendImage
from tests.support import running
from wabus.ssrf import Network

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)
PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489")
PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n"
PEER = "4915112345678"


def media_app() -> Starlette:
    async def image(request: Request) -> Response:
        return Response(PNG, media_type="image/png")

    async def voice(request: Request) -> Response:
        return Response(b"OggS" + b"\0" * 60, media_type="audio/ogg")

    async def untyped(request: Request) -> Response:
        return Response(PDF, media_type="application/octet-stream")

    async def decorated(request: Request) -> Response:
        return Response(PNG, headers={"Content-Type": "Image/PNG; charset=binary"})

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
            Route("/untyped", untyped),
            Route("/decorated", decorated),
            Route("/huge", huge),
            Route("/missing", missing),
            Route("/broken", broken),
            Route("/redirect", redirect),
        ]
    )


async def fetch(url: str, allow: Sequence[Network] = (), limit: int = MAX_MEDIA_BYTES) -> Fetched:
    """The fetch of a media send (its limit and timeouts)."""
    return await fetch_bytes(url, allow=allow, limit=limit, timeout=FETCH_TIMEOUT)


async def test_an_allowed_url_is_fetched_with_its_type() -> None:
    async with running(media_app()) as url:
        fetched = await fetch(f"{url}/image.png", LOOPBACK)
        send = SendImage(type="image", to=PEER, url=f"{url}/image.png")
        loaded = await load_media(send, LOOPBACK)
        voice = SendAudio(type="audio", to=PEER, url=f"{url}/voice", voice=True)
        voice_type = (await load_media(voice, LOOPBACK))[1]
    assert (fetched.data, fetched.content_type) == (PNG, "image/png")
    assert fetched.final_url == f"{url}/image.png"
    assert loaded == (PNG, "image/png")
    assert voice_type == "audio/ogg; codecs=opus"


async def test_the_mimetype_is_declared_else_the_urls_else_sniffed() -> None:
    async with running(media_app()) as url:
        declared = SendImage(type="image", to=PEER, url=f"{url}/image.png", mimetype="image/x-y")
        untyped = SendDocument(type="document", to=PEER, url=f"{url}/untyped")
        decorated = SendImage(type="image", to=PEER, url=f"{url}/decorated")
        assert await load_media(declared, LOOPBACK) == (PNG, "image/x-y")
        assert await load_media(untyped, LOOPBACK) == (PDF, "application/pdf")
        assert await load_media(decorated, LOOPBACK) == (PNG, "image/png")


async def test_private_addresses_are_refused_without_an_allow_list() -> None:
    async with running(media_app()) as url:
        by_name_url = f"{url.replace('127.0.0.1', 'localhost')}/image.png"
        with pytest.raises(FetchError) as by_address:
            await fetch(f"{url}/image.png")
        with pytest.raises(FetchError) as by_name:
            await fetch(by_name_url)
        with pytest.raises(SendError) as send_refused:
            await load_media(SendImage(type="image", to=PEER, url=f"{url}/image.png"))
        assert (await fetch(f"{url}/image.png", LOOPBACK)).data == PNG  # the control
    assert by_address.value.code == by_name.value.code == "media_blocked"
    assert not by_address.value.retryable
    assert (send_refused.value.code, send_refused.value.retryable) == ("media_blocked", False)


async def test_media_over_the_cap_is_refused_while_streaming() -> None:
    async with running(media_app()) as url:
        with pytest.raises(FetchError) as too_large:
            await fetch(f"{url}/huge", LOOPBACK, limit=10_000)
        fetched = await fetch(f"{url}/huge", LOOPBACK, limit=64 * 1024)
        send = SendDocument(type="document", to=PEER, url=f"{url}/huge")
        with pytest.raises(SendError) as send_too_large:
            await load_media(send, LOOPBACK, limit=10_000)
    assert too_large.value.code == "media_too_large"
    assert len(fetched.data) == 64 * 1024
    assert (send_too_large.value.code, send_too_large.value.retryable) == (
        "media_too_large",
        False,
    )


@pytest.mark.parametrize(
    ("path", "retryable"), [("/missing", False), ("/broken", True), ("/redirect", False)]
)
async def test_failed_fetches_say_whether_to_retry(path: str, retryable: bool) -> None:
    async with running(media_app()) as url:
        with pytest.raises(FetchError) as failed:
            await fetch(f"{url}{path}", LOOPBACK)
        send = SendImage(type="image", to=PEER, url=f"{url}{path}")
        with pytest.raises(SendError) as send_failed:
            await load_media(send, LOOPBACK)
    assert failed.value.code == "media_fetch_failed"
    assert failed.value.retryable is retryable
    assert (send_failed.value.code, send_failed.value.retryable) == (
        "media_fetch_failed",
        retryable,
    )
