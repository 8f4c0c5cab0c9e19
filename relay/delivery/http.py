"""A lean HTTP/1.1 client for webhook POSTs: keep-alive connections to one endpoint, each request
one write of prebuilt bytes, answers parsed by httptools (the C parser uvicorn uses).

Why not aiohttp here: measured on this project's 2-core machine, aiohttp's request path costs about
60-80 µs of CPU per POST, more than everything else a delivery does, and kept one relay process
well under the delivery target. This client does only what webhook delivery needs: POST, no
redirects (a 3xx is an answer), no cookies, no proxies, bounded answers, a total timeout per
request, TLS with certificate checks, and the SSRF guard: every address a name resolves to is
checked, and the connection goes to the address that was checked.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass

import httptools
from yarl import URL

from wabus.ssrf import BlockedTarget, Network, check_address

USER_AGENT = b"wabus-webhooks"


class HttpError(Exception):
    """The request got no complete answer (connection refused or lost, malformed answer)."""


@dataclass(frozen=True)
class Answer:
    status: int
    retry_after: str | None
    body: bytes


class _Connection(asyncio.Protocol):
    def __init__(self, max_body: int) -> None:
        self._max_body = max_body
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Answer] | None = None
        self._retry_after: str | None = None
        self._body = bytearray()
        self._headers_done = False
        self._delimited = False
        """The answer says where it ends (Content-Length, chunked); else the connection's end
        does."""
        self.reusable = True

    # asyncio protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(HttpError("the endpoint asked to upgrade the connection"))
        except httptools.HttpParserError as error:
            self._fail(HttpError(f"malformed answer: {error}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        if self._headers_done and not self._delimited and exc is None:
            self.on_message_complete()  # an answer whose end is the connection's end
        self._fail(HttpError(f"connection closed before the answer ({exc or 'EOF'})"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"retry-after":
            self._retry_after = value.decode("latin-1")
        elif name in (b"content-length", b"transfer-encoding"):
            self._delimited = True

    def on_headers_complete(self) -> None:
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        room = self._max_body - len(self._body)
        if room > 0:
            self._body += body[:room]

    def on_message_complete(self) -> None:
        if not self._parser.should_keep_alive():
            self.reusable = False
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(
                Answer(self._parser.get_status_code(), self._retry_after, bytes(self._body))
            )

    # requests
    def _fail(self, error: Exception) -> None:
        self.reusable = False
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(error)

    def send(self, request: bytes) -> asyncio.Future[Answer]:
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self._retry_after = None
        self._body.clear()
        self._headers_done = self._delimited = False
        self.transport.write(request)
        return self._waiter

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.close()


class EndpointClient:
    """Keep-alive connections to one webhook URL; `post` is safe to call concurrently (each call
    takes an idle connection or opens one, up to `limit` at once)."""

    def __init__(
        self,
        url: str,
        *,
        allow: tuple[Network, ...] = (),
        limit: int = 64,
        timeout: float = 15.0,
        max_body: int = 64 * 1024,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parsed = URL(url)
        if parsed.scheme not in {"http", "https"} or not parsed.host:
            raise BlockedTarget(url, "only http(s) URLs with a host are allowed")
        self.url = url
        self._host = parsed.host
        self._port = parsed.port or (443 if parsed.scheme == "https" else 80)
        self._tls = (
            (ssl_context or ssl.create_default_context()) if parsed.scheme == "https" else None
        )
        self._allow = allow
        self._timeout = timeout
        self._max_body = max_body
        host_header = parsed.raw_host or self._host
        if parsed.port and not parsed.is_default_port():
            host_header += f":{parsed.port}"
        self._head = (
            f"POST {parsed.raw_path_qs or '/'} HTTP/1.1\r\nHost: {host_header}\r\n".encode()
            + b"User-Agent: " + USER_AGENT + b"\r\n"
        )  # fmt: skip
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(limit)

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(self._host, self._port, type=0, proto=6)
        except OSError as error:
            raise HttpError(f"cannot resolve {self._host!r}: {error}") from error
        if not infos:
            raise HttpError(f"{self._host!r} resolves to nothing")
        for info in infos:
            check_address(self._host, str(info[4][0]), self._allow)
        family, _, _, _, address = infos[0]
        try:
            _, connection = await loop.create_connection(
                lambda: _Connection(self._max_body),
                host=str(address[0]),
                port=self._port,
                family=family,
                ssl=self._tls,
                server_hostname=self._host if self._tls else None,
            )
        except OSError as error:
            raise HttpError(f"connect failed: {error}") from error
        return connection

    async def _connection(self) -> _Connection:
        """An idle connection the endpoint has not closed meanwhile, else a new one."""
        while self._idle:
            connection = self._idle.pop()
            if connection.reusable:
                return connection
        return await self._connect()

    async def post(self, body: bytes, headers: dict[str, str]) -> Answer:
        """POST `body` with `headers`; the answer, or HttpError / BlockedTarget / TimeoutError."""
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        if extra.count("\n") != len(headers):
            raise HttpError("a header value holds a line break")
        request = b"".join(
            (self._head, extra.encode(), b"Content-Length: %d\r\n\r\n" % len(body), body)
        )
        async with self._slots, asyncio.timeout(self._timeout):
            connection = await self._connection()
            try:
                answer = await connection.send(request)
            except BaseException:
                connection.close()
                raise
            if connection.reusable:
                self._idle.append(connection)
            else:
                connection.close()
            return answer

    def close(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()
