"""`fetch_bytes` and link previews against a real local HTTP server: the SSRF guard on every hop
(loopback refused unless allow-listed — each positive case has its refused twin), redirects
followed by hand and capped, bodies capped while they stream, and a preview that degrades
(no thumbnail, or None) instead of failing."""

from __future__ import annotations

import asyncio
import io
import ipaddress
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from connector import link_preview
from connector.fetch import FetchError, fetch_bytes
from connector.link_preview import fetch_preview
from tests.support import running
from wabus.embedded import free_port
from wabus.ssrf import Network

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)
TIMEOUT = aiohttp.ClientTimeout(total=10)
LIMIT = 1024 * 1024


def png(size: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, "blue").save(out, "PNG")
    return out.getvalue()


def html(head: str) -> str:
    return f"<!doctype html><html><head>{head}</head><body><p>text</p></body></html>"


ARTICLE = html(
    '<meta property="og:title" content="An article">'
    '<meta property="og:description" content="What it says">'
    '<meta property="og:image" content="/image.png">'
)


class Site:
    """A local site that records what reached it; `release` ends the slow answers."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.accept: dict[str, str | None] = {}
        self.release = asyncio.Event()

    def app(self) -> Starlette:
        async def record(request: Request) -> None:
            self.paths.append(request.url.path)
            self.accept[request.url.path] = request.headers.get("accept")

        async def article(request: Request) -> Response:
            await record(request)
            return Response(ARTICLE, media_type="text/html; charset=utf-8")

        async def image(request: Request) -> Response:
            await record(request)
            return Response(png((1200, 630)), media_type="image/png")

        async def garbage_image_page(request: Request) -> Response:
            await record(request)
            head = '<title>Garbage</title><meta property="og:image" content="garbage.png">'
            return Response(html(head), media_type="text/html")

        async def garbage(request: Request) -> Response:
            await record(request)
            return Response(b"\x89PNG not really" * 100, media_type="image/png")

        async def page_with_image(request: Request) -> Response:
            """A page whose og:image is the query's `image`."""
            await record(request)
            image = request.query_params["image"]
            head = f'<title>Page</title><meta property="og:image" content="{image}">'
            return Response(html(head), media_type="text/html")

        async def hop(request: Request) -> Response:
            """`/hop/N` redirects N times (in the status and `Location` form N picks)."""
            await record(request)
            left = int(request.path_params["left"])
            if left == 0:
                return Response(ARTICLE, media_type="text/html")
            forms = [f"/hop/{left - 1}", f"{left - 1}", f"{request.base_url}hop/{left - 1}"]
            status = [302, 301, 303, 307, 308][left % 5]
            return Response(status_code=status, headers={"Location": forms[left % 3]})

        async def to(request: Request) -> Response:
            await record(request)
            return RedirectResponse(request.query_params["target"], status_code=302)

        async def json_answer(request: Request) -> Response:
            await record(request)
            return Response(b'{"og:title": "not a page"}', media_type="application/json")

        async def untyped(request: Request) -> Response:
            await record(request)
            return Response(ARTICLE.encode(), headers={"Content-Type": ""})

        async def empty(request: Request) -> Response:
            await record(request)
            return Response(b"", media_type="text/html")

        async def nothing(request: Request) -> Response:
            await record(request)
            return Response(html("<p>no title</p>"), media_type="text/html")

        async def broken(request: Request) -> Response:
            await record(request)
            return Response(b"down", status_code=500)

        async def missing(request: Request) -> Response:
            await record(request)
            return Response(b"gone", status_code=404)

        async def sized(request: Request) -> Response:
            """`size` bytes with their Content-Length declared."""
            await record(request)
            return Response(b"x" * int(request.query_params["size"]), media_type="text/plain")

        async def endless(request: Request) -> Response:
            """A body that does not end (capped at 64 MiB, should the reader not stop)."""
            await record(request)

            async def chunks() -> AsyncIterator[bytes]:
                yield ARTICLE.encode()[: -len("</body></html>")]
                for _ in range(1024):
                    yield b"<p>" + b"filler " * 9362 + b"</p>"
                    await asyncio.sleep(0)

            return StreamingResponse(chunks(), media_type="text/html")

        async def slow(request: Request) -> Response:
            await record(request)

            async def chunks() -> AsyncIterator[bytes]:
                yield b"<title>slow"
                await self.release.wait()

            return StreamingResponse(chunks(), media_type="text/html")

        return Starlette(
            routes=[
                Route("/article", article),
                Route("/image.png", image),
                Route("/garbage-image", garbage_image_page),
                Route("/garbage.png", garbage),
                Route("/page-with-image", page_with_image),
                Route("/hop/{left}", hop),
                Route("/to", to),
                Route("/json", json_answer),
                Route("/untyped", untyped),
                Route("/empty", empty),
                Route("/nothing", nothing),
                Route("/broken", broken),
                Route("/missing", missing),
                Route("/sized", sized),
                Route("/endless", endless),
                Route("/slow", slow),
            ]
        )


@pytest.fixture
async def site() -> AsyncIterator[tuple[Site, str]]:
    served = Site()
    async with running(served.app()) as url:
        try:
            yield served, url
        finally:
            served.release.set()


class Lines:
    """Stands in for the module's structlog logger: records `info` lines."""

    def __init__(self) -> None:
        self.info_lines: list[tuple[str, dict[str, Any]]] = []

    def info(self, event: str, **fields: Any) -> None:
        self.info_lines.append((event, fields))

    def debug(self, event: str, **fields: Any) -> None:
        pass


@pytest.fixture
def lines(monkeypatch: pytest.MonkeyPatch) -> Lines:
    recorder = Lines()
    monkeypatch.setattr(link_preview, "log", recorder)
    return recorder


async def failure(url: str, **options: Any) -> FetchError:
    options = {"allow": LOOPBACK, "limit": LIMIT, "timeout": TIMEOUT, **options}
    with pytest.raises(FetchError) as failed:
        await fetch_bytes(url, **options)
    return failed.value


# fetch_bytes


async def test_a_page_is_fetched_with_its_type_and_url(site: tuple[Site, str]) -> None:
    served, url = site
    fetched = await fetch_bytes(
        f"{url}/article", allow=LOOPBACK, limit=LIMIT, timeout=TIMEOUT, accept="text/html"
    )
    assert fetched.data == ARTICLE.encode()
    assert fetched.content_type == "text/html; charset=utf-8"
    assert fetched.final_url == f"{url}/article"
    assert served.accept["/article"] == "text/html"


async def test_loopback_is_refused_without_an_allow_list(site: tuple[Site, str]) -> None:
    served, url = site
    by_address = await failure(f"{url}/article", allow=())
    by_name = await failure(f"{url.replace('127.0.0.1', 'localhost')}/article", allow=())
    assert by_address.code == by_name.code == "media_blocked"
    assert not by_address.retryable
    assert served.paths == []


async def test_redirects_within_the_limit_are_followed(site: tuple[Site, str]) -> None:
    served, url = site
    fetched = await fetch_bytes(
        f"{url}/hop/3", allow=LOOPBACK, limit=LIMIT, timeout=TIMEOUT, follow_redirects=3
    )
    assert fetched.data == ARTICLE.encode()
    assert fetched.final_url == f"{url}/hop/0"
    assert served.paths == ["/hop/3", "/hop/2", "/hop/1", "/hop/0"]


@pytest.mark.parametrize(("start", "follow"), [(4, 3), (1, 0), (6, 5)])
async def test_redirects_beyond_the_limit_are_refused(
    site: tuple[Site, str], start: int, follow: int
) -> None:
    served, url = site
    refused = await failure(f"{url}/hop/{start}", follow_redirects=follow)
    assert (refused.code, refused.retryable) == ("media_fetch_failed", False)
    assert len(served.paths) == follow + 1
    assert "/hop/0" not in served.paths


ONLY_127_0_0_1 = (ipaddress.ip_network("127.0.0.1/32"),)


@pytest.mark.parametrize(
    ("target", "allow"),
    [
        ("http://169.254.169.254/latest/meta-data/", LOOPBACK),
        ("http://[::ffff:169.254.169.254]/", LOOPBACK),
        ("http://[::1]:{port}/article", LOOPBACK),  # IPv6 loopback: not in 127.0.0.0/8
        ("http://10.0.0.1/", LOOPBACK),
        ("http://0x7f000002:{port}/article", ONLY_127_0_0_1),  # 127.0.0.2, not allow-listed
        ("file:///etc/passwd", LOOPBACK),
        ("ftp://127.0.0.1/article", LOOPBACK),
        ("gopher://127.0.0.1:{port}/", LOOPBACK),
    ],
)
async def test_a_redirect_to_a_blocked_target_is_refused(
    site: tuple[Site, str], target: str, allow: tuple[Network, ...]
) -> None:
    served, url = site
    location = target.format(port=url.rsplit(":", 1)[1])
    refused = await failure(f"{url}/to?target={location}", allow=allow, follow_redirects=3)
    assert (refused.code, refused.retryable) == ("media_blocked", False)
    assert served.paths == ["/to"]


async def test_a_redirect_to_an_allowed_numeric_spelling_is_followed(
    site: tuple[Site, str],
) -> None:
    """The control of the refused spellings above: `0x7f000001` is 127.0.0.1, allow-listed."""
    served, url = site
    port = url.rsplit(":", 1)[1]
    fetched = await fetch_bytes(
        f"{url}/to?target=http://0x7f000001:{port}/article",
        allow=LOOPBACK,
        limit=LIMIT,
        timeout=TIMEOUT,
        follow_redirects=1,
    )
    assert fetched.data == ARTICLE.encode()
    assert served.paths == ["/to", "/article"]


@pytest.mark.parametrize(
    "path",
    ["/sized?size=10001", "/endless"],
    ids=["declared-length", "streamed"],
)
async def test_a_body_over_the_limit_is_refused(site: tuple[Site, str], path: str) -> None:
    _, url = site
    refused = await failure(f"{url}{path}", limit=10_000)
    assert (refused.code, refused.retryable) == ("media_too_large", False)


async def test_a_body_at_the_limit_is_read_and_truncation_reads_no_more(
    site: tuple[Site, str],
) -> None:
    _, url = site
    exact = await fetch_bytes(
        f"{url}/sized?size=10000", allow=LOOPBACK, limit=10_000, timeout=TIMEOUT
    )
    truncated = await fetch_bytes(
        f"{url}/endless", allow=LOOPBACK, limit=10_000, timeout=TIMEOUT, truncate=True
    )
    assert len(exact.data) == len(truncated.data) == 10_000
    assert truncated.data.startswith(b"<!doctype html>")


@pytest.mark.parametrize(
    ("path", "code", "retryable"),
    [
        ("/broken", "media_fetch_failed", True),
        ("/missing", "media_fetch_failed", False),
        ("/empty", "invalid_media", False),
        ("/hop/1", "media_fetch_failed", False),  # a redirect, not followed by default
    ],
)
async def test_failed_fetches_say_whether_to_retry(
    site: tuple[Site, str], path: str, code: str, retryable: bool
) -> None:
    _, url = site
    failed = await failure(f"{url}{path}")
    assert (failed.code, failed.retryable) == (code, retryable)


async def test_a_slow_answer_times_out_retryably(site: tuple[Site, str]) -> None:
    _, url = site
    failed = await failure(f"{url}/slow", timeout=aiohttp.ClientTimeout(total=0.3))
    assert (failed.code, failed.retryable) == ("media_fetch_failed", True)


async def test_an_unreachable_port_fails_retryably() -> None:
    failed = await failure(f"http://127.0.0.1:{free_port()}/")
    assert (failed.code, failed.retryable) == ("media_fetch_failed", True)


@pytest.mark.parametrize("url", ["http://[::1", "http://127.0.0.1:99999/"])
async def test_an_invalid_url_fails_for_good(url: str) -> None:
    failed = await failure(url)
    assert (failed.code, failed.retryable) == ("media_fetch_failed", False)


# fetch_preview


def jpeg_size(data: bytes | None) -> tuple[int, int]:
    assert data is not None
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "JPEG"
        return image.size


async def test_a_page_with_an_image_becomes_a_preview_with_a_thumbnail(
    site: tuple[Site, str], lines: Lines
) -> None:
    served, url = site
    preview = await fetch_preview(f"{url}/article", allow=LOOPBACK)
    assert preview is not None
    assert (preview.url, preview.title, preview.description) == (
        f"{url}/article",
        "An article",
        "What it says",
    )
    assert preview.image_url == f"{url}/image.png"
    assert jpeg_size(preview.thumbnail) == (300, 158)
    assert max(jpeg_size(preview.thumbnail)) <= 300
    assert served.paths == ["/article", "/image.png"]
    assert served.accept["/image.png"] == "image/*"
    assert lines.info_lines == []


async def test_the_same_page_is_refused_without_an_allow_list(
    site: tuple[Site, str], lines: Lines
) -> None:
    served, url = site
    assert await fetch_preview(f"{url}/article") is None
    assert served.paths == []
    assert [(event, fields["code"]) for event, fields in lines.info_lines] == [
        ("no link preview", "media_blocked")
    ]
    assert lines.info_lines[0][1]["host"] == "127.0.0.1"


async def test_a_preview_follows_redirects_and_keeps_the_message_url(
    site: tuple[Site, str],
) -> None:
    _, url = site
    preview = await fetch_preview(f"{url}/hop/3", allow=LOOPBACK)
    assert preview is not None
    assert preview.url == f"{url}/hop/3"
    assert preview.image_url == f"{url}/image.png"
    assert preview.thumbnail is not None
    too_far = await fetch_preview(f"{url}/hop/4", allow=LOOPBACK)
    assert too_far is None


async def test_a_preview_redirected_to_the_metadata_address_is_none(
    site: tuple[Site, str], lines: Lines
) -> None:
    _, url = site
    target = "http://169.254.169.254/latest/meta-data/"
    assert await fetch_preview(f"{url}/to?target={target}", allow=LOOPBACK) is None
    assert [fields["code"] for _, fields in lines.info_lines] == ["media_blocked"]


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/json", "not_html"),
        ("/image.png", "not_html"),
        ("/untyped", "not_html"),
        ("/nothing", "nothing_to_show"),
        ("/empty", "invalid_media"),
        ("/broken", "media_fetch_failed"),
        ("/missing", "media_fetch_failed"),
    ],
)
async def test_a_page_that_gives_no_preview_is_none_with_one_line(
    site: tuple[Site, str], lines: Lines, path: str, code: str
) -> None:
    _, url = site
    assert await fetch_preview(f"{url}{path}", allow=LOOPBACK) is None
    assert [(event, fields["code"]) for event, fields in lines.info_lines] == [
        ("no link preview", code)
    ]


async def test_a_slow_page_is_none(site: tuple[Site, str], lines: Lines) -> None:
    _, url = site
    assert await fetch_preview(f"{url}/slow", allow=LOOPBACK, timeout_seconds=0.3) is None
    assert [fields["code"] for _, fields in lines.info_lines] == ["media_fetch_failed"]


async def test_only_the_start_of_a_long_page_is_read(site: tuple[Site, str]) -> None:
    """An endless page: its head is previewed from the first `page_limit` bytes."""
    _, url = site
    preview = await fetch_preview(f"{url}/endless", allow=LOOPBACK, page_limit=64 * 1024)
    assert preview is not None
    assert preview.title == "An article"
    assert preview.thumbnail is not None


@pytest.mark.parametrize(
    "image",
    [
        "garbage.png",  # not an image
        "/missing",  # 404
        "/broken",  # 500
        "/json",  # not an image either
        "/endless",  # over the image limit
        "http://169.254.169.254/latest/meta-data/iam",  # blocked
        "http://[::1]/x.png",  # blocked (only 127.0.0.0/8 is allowed)
        "/to?target=http://10.0.0.1/x.png",  # redirected to a blocked address
        "/hop/5",  # too many redirects
    ],
)
async def test_a_page_whose_image_fails_is_a_preview_without_thumbnail(
    site: tuple[Site, str], lines: Lines, image: str
) -> None:
    _, url = site
    page = "/garbage-image" if image == "garbage.png" else f"/page-with-image?image={image}"
    preview = await fetch_preview(f"{url}{page}", allow=LOOPBACK, image_limit=256 * 1024)
    assert preview is not None
    assert preview.title in {"Garbage", "Page"}
    assert preview.image_url is not None
    assert preview.thumbnail is None
    assert lines.info_lines == []
