"""Link previews, the pure parts: the first URL of a message text and what a page's HTML offers
(OpenGraph tags, their HTML fallbacks, entities, charsets, broken or hostile markup), plus the
thumbnail made from image bytes."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from connector.link_preview import (
    MAX_DESCRIPTION,
    MAX_PAGE_BYTES,
    MAX_TITLE,
    LinkPreview,
    first_url,
    parse_preview,
    thumbnail_jpeg,
)

PAGE = "https://example.com/blog/post"


@pytest.mark.parametrize(
    ("text", "url"),
    [
        ("look https://example.com/a?b=1 now", "https://example.com/a?b=1"),
        ("https://example.com", "https://example.com"),
        ("http://example.com/x", "http://example.com/x"),
        ("HTTPS://Example.com/Path", "HTTPS://Example.com/Path"),
        ("see https://example.com.", "https://example.com"),
        ("see https://example.com/a, and more", "https://example.com/a"),
        ("really?https://example.com/q?", "https://example.com/q"),
        ("wow https://example.com/!!!", "https://example.com/"),
        ("(https://example.com/a)", "https://example.com/a"),
        ("[https://example.com/a]", "https://example.com/a"),
        (
            "(see https://en.wikipedia.org/wiki/Python_(programming_language))",
            "https://en.wikipedia.org/wiki/Python_(programming_language)",
        ),
        ("*https://example.com/bold*", "https://example.com/bold"),
        ("_https://example.com/italic_", "https://example.com/italic"),
        ('"https://example.com/quoted"', "https://example.com/quoted"),
        ("<https://example.com/angle>", "https://example.com/angle"),
        ("two: https://one.example/ https://two.example/", "https://one.example/"),
        ("ftp://files.example/ then https://web.example/", "https://web.example/"),
        ("line\nhttps://example.com/x\nnext", "https://example.com/x"),
        ("https://example.com/über", "https://example.com/über"),
        ("http:// https://example.com", "https://example.com"),
        ("https://[::1 broken then https://ok.example", "https://ok.example"),
        ("no link here", None),
        ("", None),
        ("example.com without a scheme", None),
        ("ftp://files.example/only", None),
        ("http://", None),
        ("https:///no-host", None),
    ],
)
def test_first_url(text: str, url: str | None) -> None:
    assert first_url(text) == url


@pytest.mark.parametrize(
    "text",
    [
        "http://" * 100_000,
        "https://a" + ")" * 500_000,
        "https://example.com/" + "." * 500_000,
        "h" + "ttp:/" * 100_000,
        "https://" + "a" * 1_000_000,
        ("x" * 999 + " ") * 1_000,
    ],
    ids=["schemes", "closing-brackets", "dots", "almost-schemes", "one-huge-url", "words"],
)
def test_hostile_text_is_scanned_linearly_and_overlong_urls_are_passed_over(text: str) -> None:
    found = first_url(text)
    assert found is None or len(found) <= 2048


def test_a_url_after_hostile_text_is_still_found() -> None:
    assert first_url("https://" + "a" * 100_000 + " https://b.example") == "https://b.example"


def page(head: str, body: str = "") -> bytes:
    return f"<!doctype html><html><head>{head}</head><body>{body}</body></html>".encode()


@pytest.mark.parametrize(
    ("html", "title", "description", "image_url"),
    [
        (
            page(
                '<meta property="og:title" content="OG title">'
                '<meta property="og:description" content="OG text">'
                '<meta property="og:image" content="https://cdn.example/i.jpg">'
                "<title>HTML title</title>"
                '<meta name="description" content="HTML text">'
            ),
            "OG title",
            "OG text",
            "https://cdn.example/i.jpg",
        ),
        (
            page('<title>HTML title</title><meta name="description" content="HTML text">'),
            "HTML title",
            "HTML text",
            None,
        ),
        (
            page('<meta property="og:image" content="/img/a.png">'),
            None,
            None,
            "https://example.com/img/a.png",
        ),
        (
            page('<meta property="og:image" content="thumb.png">'),
            None,
            None,
            "https://example.com/blog/thumb.png",
        ),
        (
            page('<meta property="og:image" content="//cdn.example/x.png">'),
            None,
            None,
            "https://cdn.example/x.png",
        ),
        (
            page(
                '<base href="https://static.example/s/"><meta property="og:image" content="x.png">'
            ),
            None,
            None,
            "https://static.example/s/x.png",
        ),
        (page('<meta property="og:image" content="data:image/png;base64,AAAA">'), None, None, None),
        (page('<meta property="og:image" content="javascript:alert(1)">'), None, None, None),
        (page('<meta property="og:image" content="   ">'), None, None, None),
        (
            page(
                '<META PROPERTY="OG:TITLE" CONTENT="Upper"><meta name=Description content=unquoted>'
            ),
            "Upper",
            "unquoted",
            None,
        ),
        (
            page(
                '<meta property="og:title" content="Tom &amp; Jerry &quot;live&quot; '
                '&#8211; &eacute;"><title>x</title>'
            ),
            'Tom & Jerry "live" – é',
            None,
            None,
        ),
        (page("<title>Fish &amp; Chips &lt;3 &copy;</title>"), "Fish & Chips <3 ©", None, None),
        (
            page('<meta property="og:image" content="/i.png?w=1&amp;h=2">'),
            None,
            None,
            "https://example.com/i.png?w=1&h=2",
        ),
        (page("<title>\n   Spread \t over\n lines  </title>"), "Spread over lines", None, None),
        (
            page('<meta property="og:title" content="  "><title>Fallback</title>'),
            "Fallback",
            None,
            None,
        ),
        (
            page(
                '<meta property="og:title" content="First"><meta property="og:title" content="2">'
            ),
            "First",
            None,
            None,
        ),
        (page("<title></title>"), None, None, None),
        (b"", None, None, None),
        (b"<title>Unclosed title", "Unclosed title", None, None),
        (
            b"<html><head><title>Broken<meta property=og:description content='kept'",
            "Broken",
            None,
            None,
        ),
        (
            b"<title>ok</title><div><p><meta property='og:description' content='in body'></span>",
            "ok",
            "in body",
            None,
        ),
        (
            b"<title>a</title><![if x]><!x> <<< &bogus; < p <meta property=og:image content=/z>",
            "a",
            None,
            "https://example.com/z",
        ),
        (b"<svg><title>icon</title></svg><title>page</title>", "page", None, None),
        (
            b'<meta property="og:title" content="no html around it"/>',
            "no html around it",
            None,
            None,
        ),
    ],
)
def test_parse_preview(
    html: bytes, title: str | None, description: str | None, image_url: str | None
) -> None:
    preview = parse_preview(html, PAGE, None)
    assert preview == LinkPreview(
        url=PAGE, title=title, description=description, thumbnail=None, image_url=image_url
    )


@pytest.mark.parametrize(
    ("html", "charset", "title"),
    [
        ("<title>Café Ærø</title>".encode("latin-1"), "latin-1", "Café Ærø"),
        ("<title>Café</title>".encode("latin-1"), "ISO-8859-1", "Café"),
        ("<title>“quoted” – dash</title>".encode("cp1252"), "iso-8859-1", "“quoted” – dash"),
        ('<meta charset="iso-8859-1"><title>Café</title>'.encode("latin-1"), None, "Café"),
        (
            '<meta http-equiv="Content-Type" content="text/html; charset=windows-1252">'
            "<title>Café</title>".encode("cp1252"),
            None,
            "Café",
        ),
        ("<title>Café</title>".encode(), None, "Café"),
        ("<title>Café</title>".encode(), "utf-8", "Café"),
        (b"\xef\xbb\xbf<title>BOM \xc3\xa9</title>", "latin-1", "BOM é"),
        ("<title>Café</title>".encode(), "no-such-charset", "Café"),
        ("<title>Café</title>".encode(), "rot13", "Café"),
        (b"<title>bad \xff byte</title>", "utf-8", "bad \ufffd byte"),
        ("<title>Привет</title>".encode("koi8-r"), "koi8-r", "Привет"),
    ],
)
def test_parse_preview_charsets(html: bytes, charset: str | None, title: str) -> None:
    assert parse_preview(html, PAGE, charset).title == title


def test_overlong_texts_are_cut() -> None:
    html = page(f"<title>{'T' * 5000}</title><meta name=description content='{'d ' * 5000}'>")
    preview = parse_preview(html, PAGE, None)
    assert preview.title == "T" * MAX_TITLE
    assert preview.description is not None
    assert len(preview.description) <= MAX_DESCRIPTION
    assert preview.description == ("d " * MAX_DESCRIPTION)[:MAX_DESCRIPTION].strip()


def test_only_the_first_512_kib_are_read() -> None:
    filler = b"<!-- " + b"x" * MAX_PAGE_BYTES + b" -->"
    late = b"<title>early</title>" + filler + b'<meta property="og:description" content="late">'
    assert parse_preview(late, PAGE, None).description is None
    assert parse_preview(late, PAGE, None).title == "early"


@pytest.mark.parametrize(
    "html",
    [
        b"<a" * (MAX_PAGE_BYTES // 2),
        b"</" * (MAX_PAGE_BYTES // 2),
        b"<?" * (MAX_PAGE_BYTES // 2),
        b"<" * MAX_PAGE_BYTES,
        b"<![CDATA[" * (MAX_PAGE_BYTES // 9),
        b"<meta " * (MAX_PAGE_BYTES // 6),
        b"&#" * (MAX_PAGE_BYTES // 2),
    ],
    ids=["start-tags", "end-tags", "processing", "angles", "marked-sections", "metas", "refs"],
)
def test_hostile_markup_yields_an_empty_preview(html: bytes) -> None:
    """Unterminated constructs that make `HTMLParser.close()` quadratic on older Pythons (and a
    marked section its `_markupbase` refuses with an AssertionError): an empty answer, fast."""
    preview = parse_preview(html, PAGE, None)
    assert (preview.title, preview.description, preview.image_url) == (None, None, None)


def image_bytes(size: tuple[int, int], kind: str = "PNG", mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, "red").save(out, kind)
    return out.getvalue()


@pytest.mark.parametrize(
    ("data", "size"),
    [
        (image_bytes((1200, 630)), (300, 158)),
        (image_bytes((400, 800), "JPEG"), (150, 300)),
        (image_bytes((64, 32), "GIF", "P"), (64, 32)),
        (image_bytes((600, 600), "WEBP"), (300, 300)),
        (image_bytes((500, 100), "PNG", "RGBA"), (300, 60)),
    ],
    ids=["png", "jpeg", "gif-small", "webp", "transparent"],
)
def test_thumbnails_are_jpegs_at_most_300_px(data: bytes, size: tuple[int, int]) -> None:
    thumbnail = thumbnail_jpeg(data)
    assert thumbnail is not None
    with Image.open(io.BytesIO(thumbnail)) as image:
        assert (image.format, image.size) == ("JPEG", size)


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares its size and holds no pixels: all Pillow reads before decoding."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + crc(chunk)


def crc(chunk: bytes) -> bytes:
    return struct.pack(">I", zlib.crc32(chunk))


@pytest.mark.parametrize(
    "data",
    [
        png_header(100_000, 100_000),  # over Pillow's bomb limit: DecompressionBombError
        png_header(10_000, 10_000),  # over Pillow's warning limit (an error under pytest)
        png_header(5_000, 5_000),  # over MAX_IMAGE_PIXELS only
        image_bytes((5_000, 5_000), "PNG", "1"),  # the same, a real (small) file
    ],
    ids=["bomb", "bomb-warning", "over-our-cap", "over-our-cap-real"],
)
def test_a_decompression_bomb_is_no_thumbnail(data: bytes) -> None:
    assert len(data) < 1024 * 1024
    assert thumbnail_jpeg(data) is None


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not an image at all",
        image_bytes((100, 100))[:60],
        image_bytes((100, 100), "BMP"),
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n",
    ],
    ids=["empty", "garbage", "truncated", "bmp-not-allowed", "eps-not-allowed"],
)
def test_what_is_not_an_allowed_image_is_no_thumbnail(data: bytes) -> None:
    assert thumbnail_jpeg(data) is None
