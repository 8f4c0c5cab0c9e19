"""Webhook POSTs through libcurl (pycurl), driven by the asyncio loop (`curl_loop`): one multi
handle, hence one connection pool, per endpoint.

libcurl does the HTTP/1.1: interim 1xx answers, chunked bodies with trailers, close-delimited
answers, `Connection: close`, a reused connection the endpoint closed meanwhile (the request is
sent again on a fresh one: webhooks are idempotent by `webhook-id`), several addresses per name,
TLS with certificate and host name checks. It was chosen by measurement over aiohttp, pyreqwest
and the hand-written client it replaced (docs/webhooks.md, "Choosing the HTTP client").

What this module adds is the webhook policy: POST only, no redirects (a 3xx is an answer), no
proxies, no cookies, bounded answer headers and body, a total timeout per request, and the SSRF
guard at two places: a name's addresses are resolved here, *every* one checked, and pinned for
libcurl, and libcurl's socket-open callback checks the address of every connection it opens
(which also covers IP-literal URLs). Nothing is connected to that was not checked.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import pycurl
from yarl import URL

from relay.delivery.curl_loop import CurlDriver, open_curl_loop
from wabus.ssrf import BlockedTarget, Network, check_address

USER_AGENT = "wabus-webhooks"
MAX_HEADER_BYTES = 32 * 1024
"""Answer headers beyond this (all header lines, interim answers included) fail the attempt."""
RESOLVE_TTL_SECONDS = 30.0
"""How long a name's checked addresses are used before it is resolved and checked again."""
FIXED_HEADERS = ("Accept:", "Expect:")
"""libcurl's own `Accept: */*` and `Expect: 100-continue` left out."""

Resolver = Callable[[str, int], Awaitable[list[str]]]
"""host, port → the addresses the name resolves to (any order, duplicates allowed)."""


class HttpError(Exception):
    """The request got no complete answer: connection refused or lost, malformed answer, answer
    headers over the limit."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    retry_after: str | None
    body: bytes
    truncated: bool = False
    """The answer's body went past the limit: `body` is its start, the rest was not read."""


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _trust_store() -> tuple[str | None, str | None]:
    """The system's CA file and folder (`SSL_CERT_FILE` / `SSL_CERT_DIR` override them)."""
    paths = ssl.get_default_verify_paths()
    return paths.cafile, paths.capath


class _Exchange:
    """One easy handle, reused request after request, and what its current answer brought."""

    __slots__ = ("body", "curl", "failure", "header_bytes", "max_body", "pinned", "retry_after")

    def __init__(self, curl: pycurl.Curl, max_body: int) -> None:
        self.curl = curl
        self.max_body = max_body
        self.pinned = 0
        """The generation of pinned addresses this handle has handed to libcurl."""
        self.body = bytearray()
        self.retry_after: str | None = None
        self.header_bytes = 0
        self.failure: Exception | None = None
        curl.setopt(pycurl.HEADERFUNCTION, self.on_header)
        curl.setopt(pycurl.WRITEFUNCTION, self.on_body)

    def reset(self) -> None:
        self.body = bytearray()
        self.retry_after = None
        self.header_bytes = 0
        self.failure = None

    def on_header(self, line: bytes) -> int | None:
        self.header_bytes += len(line)
        if self.header_bytes > MAX_HEADER_BYTES:
            self.failure = HttpError(f"answer headers over {MAX_HEADER_BYTES // 1024} KiB")
            return 0  # a short count aborts the transfer
        if line.startswith(b"HTTP/"):
            self.retry_after = None  # a new answer begins (an interim 1xx came before it)
        elif line[:12].lower() == b"retry-after:":
            self.retry_after = line[12:].strip().decode("latin-1")
        return None

    def on_body(self, data: bytes) -> int | None:
        if len(self.body) + len(data) > self.max_body:
            self.body += data[: self.max_body - len(self.body)]
            return 0  # stop reading: the status is known, the rest is not wanted
        self.body += data
        return None


class _Handover:
    """A socket opened for libcurl: pycurl gives libcurl a duplicate of its descriptor (`fileno`)
    and then drops this object, which closes the original at once (a socket left to the garbage
    collector is a `ResourceWarning`)."""

    __slots__ = ("_socket",)

    def __init__(self, sock: socket.socket) -> None:
        self._socket = sock

    def fileno(self) -> int:
        return self._socket.fileno()

    def __del__(self) -> None:
        self._socket.close()


class EndpointClient:
    """Keep-alive connections to one webhook URL, at most `limit` of them; `post` is safe to call
    concurrently."""

    def __init__(
        self,
        url: str,
        *,
        allow: Sequence[Network] = (),
        limit: int = 64,
        timeout: float = 15.0,
        max_body: int = 64 * 1024,
        ca_file: str | None = None,
        resolver: Resolver = system_resolver,
    ) -> None:
        parsed = URL(url)
        if parsed.scheme not in {"http", "https"} or not parsed.host:
            raise BlockedTarget(url, "only http(s) URLs with a host are allowed")
        self.url = url
        self._host = parsed.host
        self._port = parsed.port or (443 if parsed.scheme == "https" else 80)
        self._literal = _is_ip_literal(self._host)
        if self._literal:
            check_address(self._host, self._host, allow)
        self._allow = tuple(allow)
        self._timeout_ms = max(1, round(timeout * 1000))
        self._max_body = max_body
        self._limit = limit
        self._ca = (ca_file, None) if ca_file else _trust_store()
        self._resolver = resolver
        self._pins: list[str] = []
        self._pin_generation = 0
        self._pinned_until = 0.0
        self._resolving: asyncio.Future[None] | None = None
        self._idle: list[_Exchange] = []
        self._all: list[_Exchange] = []
        self._multi: CurlDriver | None = None
        self._closings = 0
        """How many times `close` ran: a request in flight across it fails with HttpError."""

    # the SSRF guard

    def _pins_stale(self) -> bool:
        return not self._literal and time.monotonic() >= self._pinned_until

    async def _pin_addresses(self) -> None:
        """Resolve the name and check every address it has; refuse it when any is refused.
        Concurrent callers share one resolution."""
        if self._resolving is None:
            self._resolving = asyncio.ensure_future(self._resolve())
        resolving = self._resolving
        try:
            await asyncio.shield(resolving)
        finally:
            if resolving.done() and self._resolving is resolving:
                self._resolving = None

    async def _resolve(self) -> None:
        try:
            addresses = await self._resolver(self._host, self._port)
        except OSError as error:
            raise HttpError(f"cannot resolve {self._host!r}: {error}") from error
        if not addresses:
            raise HttpError(f"{self._host!r} resolves to nothing")
        unique = list(dict.fromkeys(address.split("%", 1)[0] for address in addresses))
        for address in unique:
            check_address(self._host, address, self._allow)
        listed = ",".join(f"[{a}]" if ":" in a else a for a in unique)
        self._pins = [f"{self._host}:{self._port}:{listed}"]
        self._pin_generation += 1
        self._pinned_until = time.monotonic() + RESOLVE_TTL_SECONDS

    def _open_socket(self, exchange: _Exchange) -> Callable[[int, pycurl.CurlSockAddr], object]:
        def open_socket(purpose: int, address: pycurl.CurlSockAddr) -> object:
            peer = address.addr[0] if isinstance(address.addr, tuple) else repr(address.addr)
            try:
                check_address(self._host, peer, self._allow)
            except BlockedTarget as blocked:
                exchange.failure = blocked
                return pycurl.SOCKET_BAD
            return _Handover(socket.socket(address.family, address.socktype, address.protocol))

        return open_socket

    # requests

    def _exchange(self) -> _Exchange:
        if self._idle:
            return self._idle.pop()
        curl = pycurl.Curl()
        exchange = _Exchange(curl, self._max_body)
        curl.setopt(pycurl.URL, self.url)
        curl.setopt(pycurl.USERAGENT, USER_AGENT)
        curl.setopt(pycurl.PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS)
        curl.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_1_1)
        curl.setopt(pycurl.FOLLOWLOCATION, 0)
        curl.setopt(pycurl.PROXY, "")  # never through a proxy named in the environment
        curl.setopt(pycurl.NOSIGNAL, 1)
        curl.setopt(pycurl.TIMEOUT_MS, self._timeout_ms)
        curl.setopt(pycurl.OPENSOCKETFUNCTION, self._open_socket(exchange))
        self._pool().prepare(curl)
        ca_file, ca_path = self._ca
        if ca_file:
            curl.setopt(pycurl.CAINFO, ca_file)
        if ca_path:
            curl.setopt(pycurl.CAPATH, ca_path)
        self._all.append(exchange)
        return exchange

    def _pool(self) -> CurlDriver:
        """At most `limit` connections; requests beyond wait inside libcurl for one (within their
        timeout)."""
        if self._multi is None:
            multi = open_curl_loop()
            multi.setopt(pycurl.M_MAX_HOST_CONNECTIONS, self._limit)
            multi.setopt(pycurl.M_MAX_TOTAL_CONNECTIONS, self._limit)
            multi.setopt(pycurl.M_MAXCONNECTS, self._limit)
            self._multi = multi
        return self._multi

    async def post(self, body: bytes, headers: Mapping[str, str]) -> Answer:
        """POST `body` with `headers`: the answer, or HttpError / BlockedTarget / TimeoutError."""
        lines = [f"{name}: {value}" for name, value in headers.items()]
        joined = "".join(lines)
        if "\r" in joined or "\n" in joined:
            raise HttpError("a header value holds a line break")
        lines += FIXED_HEADERS
        closings = self._closings
        try:
            if self._pins_stale():
                async with asyncio.timeout(self._timeout_ms / 1000):
                    await self._pin_addresses()
            return await self._exchange_once(lines, body)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._closings != closings and task is not None and not task.cancelling():
                raise HttpError("the client was closed during the request") from None
            raise  # this request was cancelled: its handle is out of the pool already

    async def _exchange_once(self, lines: list[str], body: bytes) -> Answer:
        exchange = self._exchange()
        exchange.reset()
        curl = exchange.curl
        if exchange.pinned != self._pin_generation:
            curl.setopt(pycurl.RESOLVE, self._pins)
            exchange.pinned = self._pin_generation
        curl.setopt(pycurl.HTTPHEADER, lines)
        curl.setopt(pycurl.POSTFIELDS, body)
        try:
            await self._pool().perform(curl)
        except pycurl.error as error:
            code, message = _code_and_message(error)
            truncated = code == pycurl.E_WRITE_ERROR and exchange.failure is None
            if not truncated:
                raise _failure(exchange, code, message) from None
            return Answer(
                curl.getinfo(pycurl.RESPONSE_CODE),
                exchange.retry_after,
                bytes(exchange.body),
                truncated=True,
            )
        finally:
            if not curl.closed:  # `close` ran meanwhile: the handle is gone
                self._idle.append(exchange)
        return Answer(
            curl.getinfo(pycurl.RESPONSE_CODE), exchange.retry_after, bytes(exchange.body)
        )

    async def close(self) -> None:
        """Close every connection (the pool first: it may still call into the handles). Requests
        in flight, resolving included, fail with HttpError; a later `post` starts afresh."""
        self._closings += 1
        if self._resolving is not None:
            self._resolving.cancel()
            self._resolving = None
        if self._multi is not None:
            await self._multi.aclose()
            self._multi = None
        for exchange in self._all:
            exchange.curl.close()
        self._all.clear()
        self._idle.clear()


def _code_and_message(error: pycurl.error) -> tuple[int, str]:
    """libcurl's errors carry (code, message); pycurl's own only a message."""
    if len(error.args) == 2 and isinstance(error.args[0], int):
        return error.args[0], str(error.args[1])
    return -1, str(error.args[-1]) if error.args else "pycurl error"


def _failure(exchange: _Exchange, code: int, message: str) -> Exception:
    if exchange.failure is not None:
        return exchange.failure
    if code == pycurl.E_OPERATION_TIMEDOUT:
        return TimeoutError(message)
    return HttpError(f"{message} (curl error {code})")


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True
