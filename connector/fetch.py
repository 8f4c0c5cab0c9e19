"""The one way the connector GETs a URL a user supplied: through the SSRF guard, size-capped,
time-capped, redirects refused or followed by hand with every hop checked again.

`check_url` refuses a hop's scheme and IP-literal host before it is requested; the guarded
connector refuses the addresses a name resolves to when it connects. aiohttp's own redirect
handling is never used: it would request a `Location` without the IP-literal check.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp
from yarl import URL

from wabus.ssrf import BlockedTarget, Network, check_url, guarded_connector

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_CHUNK = 65536


@dataclass(frozen=True)
class Fetched:
    """A body read in full (or its first `limit` bytes, when asked to truncate)."""

    data: bytes
    content_type: str | None
    final_url: str
    """The URL that answered: the one asked for, or the last redirect's target."""


class FetchError(Exception):
    """A GET that did not produce a body; `code` is stable (the codes of a media send):

    - `media_blocked`: the URL, a redirect's target, or an address a name resolved to is
      refused by the SSRF guard (or is not http(s));
    - `media_too_large`: the body is longer than the limit;
    - `media_fetch_failed`: a status other than 200, too many redirects, an invalid URL (not
      retryable), or a 5xx, a network error or a timeout (retryable);
    - `invalid_media`: the body is empty.
    """

    def __init__(self, code: str, reason: str, retryable: bool = False) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason
        self.retryable = retryable


async def fetch_bytes(
    url: str,
    *,
    allow: Sequence[Network] = (),
    limit: int,
    timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 - the session's; its total is enforced too
    accept: str | None = None,
    follow_redirects: int = 0,
    truncate: bool = False,
) -> Fetched:
    """GET `url` through the SSRF guard and read its body, at most `limit` bytes.

    With `follow_redirects` 0 a redirect is a failed fetch (`media_fetch_failed`, not
    retryable); above 0 up to that many redirects are followed, each target resolved against
    the URL that sent it and checked like the first URL (a non-http(s) target is
    `media_blocked`). A body longer than `limit` is refused (`media_too_large`) while it
    streams — no more than `limit + 1` bytes are read — unless `truncate`, which returns its
    first `limit` bytes instead (for a page only the start of which is wanted). `timeout.total`,
    when set, bounds the whole fetch, every hop together; the other fields bound each request.
    Raises `FetchError` (see there for the codes)."""
    try:
        deadline = asyncio.timeout(timeout.total)
        async with (
            deadline,
            aiohttp.ClientSession(connector=guarded_connector(allow), timeout=timeout) as session,
        ):
            return await _follow(session, url, allow, limit, accept, follow_redirects, truncate)
    except BlockedTarget as error:
        raise FetchError("media_blocked", error.reason) from error
    except aiohttp.ClientConnectorError as error:
        if isinstance(error.os_error, BlockedTarget):
            raise FetchError("media_blocked", error.os_error.reason) from error
        raise FetchError("media_fetch_failed", str(error), retryable=True) from error
    except aiohttp.InvalidURL as error:  # a ClientError, but retrying will not help
        raise FetchError("media_fetch_failed", f"not a valid URL: {error}") from error
    except (aiohttp.ClientError, TimeoutError) as error:
        raise FetchError("media_fetch_failed", str(error) or "timed out", retryable=True) from error


async def _follow(
    session: aiohttp.ClientSession,
    url: str,
    allow: Sequence[Network],
    limit: int,
    accept: str | None,
    redirects: int,
    truncate: bool,
) -> Fetched:
    headers = {"Accept": accept} if accept else {}
    target = _checked(url, allow)
    for hop in range(redirects + 1):
        async with session.get(target, allow_redirects=False, headers=headers) as response:
            location = response.headers.get("Location")
            if response.status in REDIRECT_STATUSES and location is not None and redirects:
                if hop == redirects:
                    raise FetchError("media_fetch_failed", f"more than {redirects} redirects")
                target = _checked(_joined(response.url, location), allow)
                continue
            if response.status != 200:
                raise FetchError(
                    "media_fetch_failed",
                    f"URL answered HTTP {response.status}",
                    retryable=response.status >= 500,
                )
            data = await _read(response, limit, truncate)
            if not data:
                raise FetchError("invalid_media", "URL answered with no bytes")
            return Fetched(data, response.headers.get("Content-Type"), str(response.url))
    raise AssertionError("unreachable: the last hop returns or raises")  # pragma: no cover


async def _read(response: aiohttp.ClientResponse, limit: int, truncate: bool) -> bytes:
    """The body, reading no more than `limit + 1` bytes (`limit` when truncating)."""
    if not truncate and (response.content_length or 0) > limit:
        raise FetchError("media_too_large", f"body is larger than {limit} bytes")
    wanted = limit if truncate else limit + 1
    data = bytearray()
    while len(data) < wanted:
        chunk = await response.content.read(min(_CHUNK, wanted - len(data)))
        if not chunk:
            break
        data += chunk
    if len(data) > limit:
        raise FetchError("media_too_large", f"body is larger than {limit} bytes")
    return bytes(data)


def _checked(url: str, allow: Sequence[Network]) -> str:
    """`url`, once the guard has looked at its scheme and host."""
    try:
        check_url(url, allow)
    except ValueError as error:
        raise FetchError("media_fetch_failed", f"not a valid URL: {error}") from error
    return url


def _joined(base: URL, location: str) -> str:
    try:
        return str(base.join(URL(location)))
    except ValueError as error:
        raise FetchError("media_fetch_failed", "a redirect to an invalid URL") from error
