"""Link previews for outbound text messages: the first URL of the text, its page's title,
description and image (OpenGraph, with HTML fallbacks), the image as a small JPEG thumbnail.

Every request goes through `connector.fetch.fetch_bytes` (the SSRF guard, size and time caps,
redirects checked hop by hop). A preview is an extra: whatever goes wrong, `fetch_preview`
answers None (or a preview without a thumbnail) and never raises into a send.
"""

from __future__ import annotations

import codecs
import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from html.parser import HTMLParser

import aiohttp
from yarl import URL

from connector.fetch import FetchError, fetch_bytes
from connector.images import as_jpeg
from wabus.conversion import in_turn
from wabus.logs import get_logger
from wabus.ssrf import Network

log = get_logger(__name__)

MAX_PAGE_BYTES = 512 * 1024
"""Only this much of a page is read and parsed: its head, where the tags are, comes first."""
MAX_IMAGE_BYTES = 2 * 1024 * 1024
MAX_TITLE = 256
MAX_DESCRIPTION = 1024
MAX_URL = 2048
THUMBNAIL_SIDE = 300
PAGE_REDIRECTS = 3
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})


@dataclass(frozen=True)
class LinkPreview:
    url: str
    """The URL as it appears in the message text."""
    title: str | None
    description: str | None
    thumbnail: bytes | None
    """A JPEG, at most `THUMBNAIL_SIDE` pixels on its longer side."""
    image_url: str | None = None
    """The page's `og:image`, absolute and http(s): what the thumbnail is made from."""


_URL_IN_TEXT = re.compile(r"https?://[^\s<>\"'`]+", re.IGNORECASE)
"""A scheme, then a run of characters from one class: no nested or adjacent quantifiers, so
matching is linear in the text, hostile or not (and each match is checked for length after)."""
_TRAILING = ".,;:!?*~_"
_CLOSING = {")": "(", "]": "[", "}": "{"}


def first_url(text: str) -> str | None:
    """The first http(s) URL with a host in a message text, without the punctuation that ends a
    sentence or WhatsApp formatting (`*bold*`) after it; a closing bracket stays when the URL
    opened it (`https://en.wikipedia.org/wiki/Python_(programming_language)`). URLs longer than
    `MAX_URL` characters are passed over."""
    for match in _URL_IN_TEXT.finditer(text):  # linear: matches do not overlap
        candidate = _trimmed(match.group())
        if len(candidate) > MAX_URL:
            continue
        try:
            parsed = URL(candidate)
            host = parsed.host
            _ = parsed.port  # parses lazily: a bad one raises here
        except (ValueError, IndexError):
            continue
        if host:
            return candidate
    return None


def _trimmed(url: str) -> str:
    """`url` without its trailing punctuation, in one pass (the bracket counts are kept, not
    recounted: a run of `)` after a long URL costs no more than the URL)."""
    counts = {bracket: url.count(bracket) for bracket in "()[]{}"}
    end = len(url)
    while end:
        last = url[end - 1]
        if last in _CLOSING and counts[_CLOSING[last]] < counts[last]:
            counts[last] -= 1
        elif last not in _TRAILING:
            break
        end -= 1
    return url[:end]


def parse_preview(html: bytes, url: str, charset: str | None) -> LinkPreview:
    """The preview a page at `url` offers, without a thumbnail: `og:title`, else `<title>`;
    `og:description`, else `<meta name="description">`; `og:image` in `image_url`, resolved
    against `url` (or the page's `<base href>`), None unless it is http(s). Texts are
    whitespace-collapsed and cut to `MAX_TITLE` / `MAX_DESCRIPTION` characters.

    Only the first `MAX_PAGE_BYTES` are read, decoded with `charset` (the response's), else the
    page's own `<meta charset>`, else UTF-8; undecodable bytes are replaced. The standard
    library's `html.parser` reads it: no new dependency, and it is tolerant by design — broken
    markup, unclosed tags and stray entities yield what could be read rather than an error (and
    should it give up anyway, what it read until then still counts). CPU-bound (a fraction of a
    second for the worst 512 KiB): async callers run it in a thread."""
    text = _decoded(html[:MAX_PAGE_BYTES], charset)
    reader = _HeadReader()
    try:
        reader.feed(text)
    except Exception as error:  # the parser gave up: keep what it read, say what was lost
        log.info("link preview page only partly read", url=url, error=repr(error))
    # No `close()`: on Python versions before the fix for CVE-2025-6069 it takes quadratic
    # time over a tail of unterminated tags (`<a<a<a…`: minutes for 512 KiB), while `feed` is
    # linear; all `close()` would add is that unterminated tail, which holds nothing wanted.
    title = _cut(reader.meta.get("og:title"), MAX_TITLE) or _cut(reader.title(), MAX_TITLE)
    description = _cut(reader.meta.get("og:description"), MAX_DESCRIPTION) or _cut(
        reader.meta.get("description"), MAX_DESCRIPTION
    )
    return LinkPreview(
        url=url,
        title=title,
        description=description,
        thumbnail=None,
        image_url=_image_url(reader.meta.get("og:image"), url, reader.base),
    )


_WANTED = frozenset({"og:title", "og:description", "og:image", "description"})


class _HeadReader(HTMLParser):
    """Collects the wanted `<meta property|name content>` (the first of each), the first
    `<title>` outside an `<svg>`, and the first `<base href>`."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.meta: dict[str, str] = {}
        self.base: str | None = None
        self._title: list[str] | None = None
        self._in_title = False
        self._svg = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "meta":
            values = {name: value for name, value in attrs if value is not None}
            key = (values.get("property") or values.get("name") or "").strip().lower()
            content = values.get("content")
            if key in _WANTED and content is not None and key not in self.meta:
                self.meta[key] = content
        elif tag == "title" and self._title is None and not self._svg:
            self._title, self._in_title = [], True
        elif tag == "base" and self.base is None:
            self.base = dict(attrs).get("href")
        elif tag == "svg":
            self._svg += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != "svg":  # `<svg/>` opens nothing
            self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag == "svg" and self._svg:
            self._svg -= 1

    def handle_data(self, data: str) -> None:
        if self._in_title and self._title is not None:
            self._title.append(data)

    def title(self) -> str | None:
        return None if self._title is None else "".join(self._title)


_META_CHARSET = re.compile(
    rb"<meta[^>]{0,512}?charset\s*=\s*[\"']?\s*([A-Za-z0-9._:-]{1,40})", re.I
)


def _decoded(html: bytes, charset: str | None) -> str:
    if html.startswith(codecs.BOM_UTF8):
        return html[len(codecs.BOM_UTF8) :].decode("utf-8", errors="replace")
    for name in (charset, _declared_charset(html), "utf-8"):
        if name:
            try:
                return html.decode(_codec(name), errors="replace")
            except (LookupError, ValueError):  # unknown, or not a text encoding (`rot13`)
                continue
    return html.decode("utf-8", errors="replace")  # pragma: no cover — utf-8 is always known


def _declared_charset(html: bytes) -> str | None:
    match = _META_CHARSET.search(html[:4096])
    return match.group(1).decode("ascii") if match else None


def _codec(name: str) -> str:
    """The codec for a charset label; like browsers, `iso-8859-1`/`latin-1`/`ascii` are read as
    windows-1252 (a superset: its curly quotes and dashes would otherwise be control codes)."""
    codec = codecs.lookup(name.strip().strip("\"'")).name
    return "cp1252" if codec in {"latin-1", "iso8859-1", "ascii"} else codec


def _cut(value: str | None, limit: int) -> str | None:
    if value is None:
        return None
    collapsed = " ".join(value.split()[: limit + 1])[:limit].strip()
    return collapsed or None


def _image_url(image: str | None, page: str, base: str | None) -> str | None:
    if not image or not image.strip() or len(image) > MAX_URL:
        return None
    try:
        root = URL(page)
        if base and len(base) <= MAX_URL:
            root = root.join(URL(base.strip()))
        resolved = root.join(URL(image.strip()))
    except (ValueError, IndexError):
        return None
    if resolved.scheme not in {"http", "https"} or not resolved.host:
        return None
    return str(resolved)


async def fetch_preview(
    url: str,
    *,
    allow: Sequence[Network] = (),
    page_limit: int = MAX_PAGE_BYTES,
    image_limit: int = MAX_IMAGE_BYTES,
    timeout_seconds: float = 5,
) -> LinkPreview | None:
    """The preview of the page at `url`, or None (with one info log line saying why) when the
    page cannot be had: refused by the guard, failed, not HTML, nothing to show.

    The page is fetched (up to `PAGE_REDIRECTS` redirects, only its first `page_limit` bytes
    read) and parsed only when it answers `text/html` or `application/xhtml+xml`; its `og:image`
    (at most `image_limit` bytes) becomes the thumbnail — or, when anything about the image
    fails, the preview has none. Each of the two fetches is bounded by `timeout_seconds`."""
    timeout = aiohttp.ClientTimeout(total=timeout_seconds)
    try:
        page = await fetch_bytes(
            url,
            allow=allow,
            limit=page_limit,
            timeout=timeout,
            accept="text/html,application/xhtml+xml;q=0.9,*/*;q=0.1",
            follow_redirects=PAGE_REDIRECTS,
            truncate=True,
        )
        media_type, charset = _content_type(page.content_type)
        if media_type not in HTML_TYPES:
            _skipped(url, "not_html", f"the page is {media_type or 'of no stated type'}")
            return None
        found = await in_turn(parse_preview, page.data, page.final_url, charset)
        if found.title is None and found.description is None and found.image_url is None:
            _skipped(url, "nothing_to_show", "no title, description or image")
            return None
        thumbnail = None
        if found.image_url is not None:
            thumbnail = await _thumbnail_of(found.image_url, allow, image_limit, timeout)
        return dataclasses.replace(found, url=url, thumbnail=thumbnail)
    except FetchError as error:
        _skipped(url, error.code, error.reason)
        return None
    except Exception as error:  # a preview must never make a send fail
        _skipped(url, "preview_failed", f"{type(error).__name__}: {error}")
        return None


def _skipped(url: str, code: str, reason: str) -> None:
    log.info("no link preview", host=_host(url), code=code, reason=reason[:300])


def _host(url: str) -> str | None:
    """Only the host is logged: a URL from a message may carry tokens in its path or query."""
    try:
        return URL(url).host
    except (ValueError, IndexError):
        return None


def _content_type(header: str | None) -> tuple[str | None, str | None]:
    """The media type (lowercase) and the charset parameter of a Content-Type header."""
    if not header:
        return None, None
    media_type, *parameters = header.split(";")
    charset = None
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip("\"'") or None
    return media_type.strip().lower() or None, charset


async def _thumbnail_of(
    image_url: str, allow: Sequence[Network], limit: int, client_timeout: aiohttp.ClientTimeout
) -> bytes | None:
    try:
        image = await fetch_bytes(
            image_url,
            allow=allow,
            limit=limit,
            timeout=client_timeout,
            accept="image/*",
            follow_redirects=PAGE_REDIRECTS,
        )
    except FetchError as error:
        log.debug("link preview without a thumbnail", code=error.code, reason=error.reason)
        return None
    return await in_turn(thumbnail_jpeg, image.data)


def thumbnail_jpeg(data: bytes, side: int = THUMBNAIL_SIDE) -> bytes | None:
    """`data` as a thumbnail: a JPEG at most `side` pixels on its longer side, or None
    (`connector.images.as_jpeg`)."""
    return as_jpeg(data, side)
