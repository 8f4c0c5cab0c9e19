"""Conformance suite of the webhook HTTP client (relay/delivery/http.py) against real local servers.

Each server is a raw asyncio server that writes exact bytes, so every protocol edge is precise:
interim answers, chunked and close-delimited bodies, `Connection: close`, connections the endpoint
closes, IPv6, names with several addresses, TLS, answer limits, timeouts, redirects, the SSRF guard,
concurrency and cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import enum
import ipaddress
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from relay.delivery.http import MAX_HEADER_BYTES, Answer, EndpointClient, HttpError
from wabus.ssrf import BlockedTarget, Network

LOOPBACK: tuple[Network, ...] = (ipaddress.ip_network("127.0.0.0/8"),)
LOOPBACK6: tuple[Network, ...] = (ipaddress.ip_network("::1/128"),)
T = TypeVar("T")
NAME = "hooks.test"
"""A name only the tests' resolvers know: its addresses are pinned per test."""


# the server


class Then(enum.Enum):
    """What the server does with the connection once a reply's bytes are written."""

    KEEP = "keep"
    """Read the next request on it."""
    CLOSE = "close"
    """Close it (FIN), without having said so."""
    RESET = "reset"
    """Abort it (RST)."""
    HANG = "hang"
    """Write nothing more and wait until the client closes it."""


@dataclass(frozen=True)
class Reply:
    parts: Sequence[bytes] = ()
    """Written one after another, each flushed on its own."""
    then: Then = Then.KEEP
    pause: float = 0.0
    """Seconds to wait before each part but the first."""


HANG = Reply(then=Then.HANG)
"""Never answer."""


@dataclass(frozen=True)
class Request:
    connection: int
    """Which connection of the server it came on, from 0 in the order they were accepted."""
    number: int
    """Its position on that connection, from 0."""
    line: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = [value for key, value in self.headers if key.lower() == name.lower()]
        assert len(values) <= 1, f"{name} sent {len(values)} times"
        return values[0] if values else None

    @property
    def webhook_id(self) -> str:
        value = self.header("webhook-id")
        assert value is not None
        return value


Answerer = Callable[[Request], bytes | Reply]


@dataclass(eq=False)
class Server:
    """A raw HTTP/1.1 server on one address: `answer(request)` gives the bytes to write back, or a
    `Reply` saying how to write them and what to do with the connection afterwards."""

    answer: Answerer
    tls: ssl.SSLContext | None = None
    connections: int = 0
    """TCP connections accepted (before any TLS handshake)."""
    open: int = 0
    peak: int = 0
    """The most connections open at once."""
    closed_by_client: int = 0
    """Connections the client closed or reset (at the TLS handshake, between requests, during
    an answer)."""
    requests: list[Request] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 0
    _listening: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> Server:
        self.host = host
        self._listening = await asyncio.start_server(self._handle, host, port)
        self.port = self._listening.sockets[0].getsockname()[1]
        return self

    def url(self, path: str = "/hook?x=1", host: str | None = None) -> str:
        host = host or (f"[{self.host}]" if ":" in self.host else self.host)
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}{path}"

    async def until(self, predicate: Callable[[], bool]) -> None:
        """Wait (5 s at most) until `predicate` holds."""
        async with asyncio.timeout(5), self._changed:
            await self._changed.wait_for(predicate)

    async def received(self, webhook_id: str) -> None:
        """Wait (5 s at most) until a request with `webhook_id` came."""
        await self.until(lambda: any(r.webhook_id == webhook_id for r in self.requests))

    async def stop(self) -> None:
        if self._listening is not None:
            self._listening.close()
        for writer in self._writers:
            writer.transport.abort()  # its handler ends on its own (cancelling it would log)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._listening is not None:
            await self._listening.wait_closed()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        connection = self.connections
        self.connections += 1
        self.open += 1
        self.peak = max(self.peak, self.open)
        try:
            if self.tls is not None:
                await writer.start_tls(self.tls)
            number = 0
            while True:
                request = await self._read(reader, connection, number)
                if request is None:
                    self.closed_by_client += 1
                    return
                self.requests.append(request)
                await self._notify()
                answer = self.answer(request)
                reply = answer if isinstance(answer, Reply) else Reply([answer])
                for index, part in enumerate(reply.parts):
                    if index and reply.pause:
                        await asyncio.sleep(reply.pause)
                    writer.write(part)
                    await writer.drain()
                if reply.then is Then.HANG:
                    await reader.read()  # until the client closes the connection
                    self.closed_by_client += 1
                    return
                if reply.then is Then.RESET:
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    writer.transport.abort()
                    return
                if reply.then is Then.CLOSE:
                    return
                number += 1
        except (ConnectionError, ssl.SSLError):  # a refused handshake, a timeout, a limit…
            self.closed_by_client += 1
        finally:
            self.open -= 1
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()
            self._tasks.discard(task)
            self._writers.discard(writer)
            await self._notify()

    @staticmethod
    async def _read(reader: asyncio.StreamReader, connection: int, number: int) -> Request | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        line, *lines = head[:-4].decode("latin-1").split("\r\n")
        headers = [(name, value.strip()) for name, value in (x.split(":", 1) for x in lines)]
        lengths = [value for name, value in headers if name.lower() == "content-length"]
        body = await reader.readexactly(int(lengths[0])) if lengths else b""
        return Request(connection, number, line, headers, body)


def response(
    status: int = 200,
    reason: str = "OK",
    *,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    length: bool = True,
) -> bytes:
    """An answer's bytes: status line, headers, `Content-Length` (unless `length` is false)."""
    lines = [f"HTTP/1.1 {status} {reason}", *(f"{name}: {value}" for name, value in headers)]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def no_content(request: Request) -> bytes:
    return b"HTTP/1.1 204 No Content\r\n\r\n"


def echo(request: Request) -> bytes:
    """200 with the request's webhook-id as the body."""
    return response(body=request.webhook_id.encode())


def hook(n: int) -> dict[str, str]:
    return {"webhook-id": f"evt_{n}", "content-type": "application/json"}


def pattern(size: int) -> bytes:
    """A body cycling through 251 byte values: a piece from the wrong offset does not match."""
    return bytes(i % 251 for i in range(size))


async def settled(awaitable: Awaitable[T], within: float = 10) -> T:
    """Await it, failing the test instead of hanging should it be pending after `within`
    seconds (a bound far above any timeout under test, not a measurement)."""
    task = asyncio.ensure_future(awaitable)
    done, _ = await asyncio.wait({task}, timeout=within)
    if not done:
        task.cancel()
        pytest.fail(f"still pending after {within} s")
    return task.result()


class Pinned:
    """A resolver with fixed answers that counts its calls."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = list(addresses)
        self.calls: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        return list(self.addresses)


# fixtures


class Servers:
    def __init__(self) -> None:
        self.started: list[Server] = []

    async def __call__(
        self,
        answer: Answerer,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: ssl.SSLContext | None = None,
    ) -> Server:
        server = Server(answer, tls=tls)
        self.started.append(server)
        return await server.start(host, port)


class Clients:
    def __init__(self) -> None:
        self.made: list[EndpointClient] = []

    def __call__(self, url: str, **options: Any) -> EndpointClient:
        client = EndpointClient(url, **options)
        self.made.append(client)
        return client


@pytest.fixture
async def serve() -> AsyncIterator[Servers]:
    servers = Servers()
    yield servers
    for server in servers.started:
        await server.stop()


@pytest.fixture
async def client() -> AsyncIterator[Clients]:
    clients = Clients()
    yield clients
    for made in clients.made:
        await made.close()


# keep-alive, interim answers, body framings, closed connections


async def test_requests_are_exact_and_connections_kept_alive(
    serve: Servers, client: Clients
) -> None:
    server = await serve(no_content)
    endpoint = client(server.url(), allow=LOOPBACK, limit=4)
    for n in range(20):
        assert await endpoint.post(b'{"a":1}', hook(n)) == Answer(204, None, b"")
    assert server.connections == 1
    assert [(r.connection, r.number) for r in server.requests] == [(0, n) for n in range(20)]
    first = server.requests[0]
    assert first.line == "POST /hook?x=1 HTTP/1.1"
    assert [name.lower() for name, _ in first.headers] == [
        "host", "user-agent", "webhook-id", "content-type", "content-length",
    ]  # fmt: skip
    assert first.header("Host") == f"127.0.0.1:{server.port}"
    assert first.header("webhook-id") == "evt_0"
    assert first.header("content-type") == "application/json"
    assert first.header("User-Agent") == "wabus-webhooks"
    assert first.header("Content-Length") == "7"
    assert first.body == b'{"a":1}'


def interim_then_final(request: Request) -> Reply:
    """For `evt_<n>`: 100 Continue, 103 Early Hints or both, then 503 (odd n, `Retry-After: n`)
    or 200 (even n, no `Retry-After`), the webhook-id as body. The 103 says `Retry-After: 999`,
    which must not leak into the final answer. Every other pair of requests gets each answer in a
    write of its own."""
    n = int(request.webhook_id.removeprefix("evt_"))
    go_on = b"HTTP/1.1 100 Continue\r\n\r\n"
    hints = (
        b"HTTP/1.1 103 Early Hints\r\n"
        b"Link: </style.css>; rel=preload; as=style\r\n"
        b"Link: </app.js>; rel=preload; as=script\r\n"
        b"Retry-After: 999\r\n\r\n"
    )
    interims = [[go_on], [hints], [go_on, hints]][n % 3]
    body = request.webhook_id.encode()
    if n % 2:
        final = response(503, "Busy", headers=[("Retry-After", str(n))], body=body)
    else:
        final = response(200, body=body)
    parts = [*interims, final]
    return Reply(parts if (n // 2) % 2 else [b"".join(parts)])


def expected_after_interim(n: int) -> Answer:
    body = f"evt_{n}".encode()
    return Answer(503, str(n), body) if n % 2 else Answer(200, None, body)


async def test_interim_answers_come_before_each_requests_own_final_answer(
    serve: Servers, client: Clients
) -> None:
    server = await serve(interim_then_final)
    one_by_one = client(server.url(), allow=LOOPBACK)
    for n in range(30):
        assert await one_by_one.post(b"{}", hook(n)) == expected_after_interim(n)
    assert server.connections == 1  # the same keep-alive connection throughout
    assert [r.number for r in server.requests] == list(range(30))

    together = client(server.url(), allow=LOOPBACK, limit=6)
    numbers = range(100, 190)
    answers = await asyncio.gather(*(together.post(b"{}", hook(n)) for n in numbers))
    assert answers == [expected_after_interim(n) for n in numbers]
    assert 1 < server.connections <= 1 + 6
    assert sum(r.number > 0 for r in server.requests[30:]) >= len(numbers) - 6  # reused


async def test_chunked_answers_with_trailers_are_read_whole_on_a_kept_connection(
    serve: Servers, client: Clients
) -> None:
    big = pattern(40_000)
    chunks = b"".join(b"%x\r\n%s\r\n" % (1000, big[i : i + 1000]) for i in range(0, 40_000, 1000))

    def chunked(request: Request) -> Reply:
        head = (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Digest\r\n"
            b"Retry-After: 7\r\n\r\n"
        )
        if request.webhook_id == "evt_big":
            return Reply([head, chunks[:12_345], chunks[12_345:], b"0\r\n\r\n"])
        stream = b"5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Digest: abc\r\nX-More: 1\r\n\r\n"
        return Reply([head + stream[:3], stream[3:20], stream[20:]])  # cut mid-size, mid-chunk

    server = await serve(chunked)
    endpoint = client(server.url(), allow=LOOPBACK)
    for n in range(5):
        assert await endpoint.post(b"{}", hook(n)) == Answer(200, "7", b"hello world")
    assert await endpoint.post(b"{}", {"webhook-id": "evt_big"}) == Answer(200, "7", big)
    assert await endpoint.post(b"{}", hook(6)) == Answer(200, "7", b"hello world")
    assert server.connections == 1
    assert [r.number for r in server.requests] == list(range(7))


@pytest.mark.parametrize("version", ["HTTP/1.1", "HTTP/1.0"])
async def test_close_delimited_answers_are_read_whole(
    serve: Servers, client: Clients, version: str
) -> None:
    body = pattern(50_000)

    def close_delimited(request: Request) -> Reply:
        head = f"{version} 200 OK\r\nRetry-After: 3\r\n\r\n".encode()
        return Reply([head, body[:10], body[10:30_000], body[30_000:]], then=Then.CLOSE)

    server = await serve(close_delimited)
    endpoint = client(server.url(), allow=LOOPBACK)
    for n in range(3):
        assert await endpoint.post(b"{}", hook(n)) == Answer(200, "3", body)
    assert server.connections == 3
    assert [r.number for r in server.requests] == [0, 0, 0]


@pytest.mark.parametrize("then", [Then.CLOSE, Then.KEEP], ids=["server-closes", "server-keeps"])
async def test_connection_close_is_honoured(serve: Servers, client: Clients, then: Then) -> None:
    closing = await serve(
        lambda r: Reply([response(503, headers=[("Connection", "close")], body=b"later")], then)
    )
    keeping = await serve(lambda r: response(503, body=b"later"))
    for server in (closing, keeping):
        endpoint = client(server.url(), allow=LOOPBACK)
        for n in range(3):
            assert await endpoint.post(b"{}", hook(n)) == Answer(503, None, b"later")
    assert closing.connections == 3  # even when the server keeps its side open
    assert [r.number for r in closing.requests] == [0, 0, 0]
    assert keeping.connections == 1  # the control: without `Connection: close`, one connection


@pytest.mark.parametrize("then", [Then.CLOSE, Then.RESET], ids=["fin", "rst"])
async def test_a_reused_connection_closed_unanswered_is_retried_on_a_fresh_one(
    serve: Servers, client: Clients, then: Then
) -> None:
    """The endpoint read the request on a reused connection and closed it without a byte, as an
    endpoint closing an idle connection just as a request goes out does: webhooks are idempotent
    by webhook-id, so the request goes again, once, on a new connection."""
    dropped: list[Request] = []

    def drop_first_reused(request: Request) -> bytes | Reply:
        if request.number == 1 and not dropped:
            dropped.append(request)
            return Reply(then=then)
        return echo(request)

    server = await serve(drop_first_reused)
    endpoint = client(server.url(), allow=LOOPBACK)
    for n in range(4):
        assert await endpoint.post(b'{"n":%d}' % n, hook(n)) == Answer(200, None, b"evt_%d" % n)
    assert server.connections == 2
    seen = [(r.connection, r.number, r.webhook_id) for r in server.requests]
    assert seen == [
        (0, 0, "evt_0"), (0, 1, "evt_1"), (1, 0, "evt_1"), (1, 1, "evt_2"), (1, 2, "evt_3"),
    ]  # fmt: skip
    assert server.requests[1].body == server.requests[2].body == b'{"n":1}'


async def test_an_endpoint_closing_idle_connections_unannounced_causes_no_failure(
    serve: Servers, client: Clients
) -> None:
    server = await serve(lambda r: Reply([echo(r)], then=Then.CLOSE))
    endpoint = client(server.url(), allow=LOOPBACK)
    for n in range(20):  # back to back: the close may or may not have arrived
        assert await endpoint.post(b"{}", hook(n)) == Answer(200, None, b"evt_%d" % n)
    for n in range(20, 25):
        await server.until(lambda: server.open == 0)  # the close has arrived
        assert await endpoint.post(b"{}", hook(n)) == Answer(200, None, b"evt_%d" % n)
    assert server.connections == len(server.requests) == 25
    assert [r.webhook_id for r in server.requests] == [f"evt_{n}" for n in range(25)]


# addresses


async def test_ipv6_literal_target(serve: Servers, client: Clients) -> None:
    server = await serve(echo, host="::1")
    url = f"http://[::1]:{server.port}/path?q=1"
    endpoint = client(url, allow=LOOPBACK6)
    for n in range(3):
        assert await endpoint.post(b"{}", hook(n)) == Answer(200, None, b"evt_%d" % n)
    assert server.connections == 1
    request = server.requests[0]
    assert request.line == "POST /path?q=1 HTTP/1.1"
    assert request.header("Host") == f"[::1]:{server.port}"
    for allow in ((), LOOPBACK):  # ::1 is not allowed by default, nor by an IPv4 allow-list
        with pytest.raises(BlockedTarget):
            await client(url, allow=allow).post(b"{}", hook(9))
    assert len(server.requests) == 3


@pytest.mark.parametrize(
    ("addresses", "allow"),
    [
        (["127.0.0.3", "127.0.0.1"], LOOPBACK),
        (["::1", "127.0.0.1"], LOOPBACK + LOOPBACK6),
        (["127.0.0.1", "127.0.0.1"], LOOPBACK),
    ],
    ids=["first-refuses", "ipv6-refuses", "duplicates"],
)
async def test_a_name_with_several_addresses_connects_to_one_that_answers(
    serve: Servers, client: Clients, addresses: list[str], allow: tuple[Network, ...]
) -> None:
    server = await serve(echo)  # listens on 127.0.0.1 only
    resolver = Pinned(*addresses)
    endpoint = client(server.url(host=NAME), allow=allow, resolver=resolver)
    for n in range(3):
        assert await endpoint.post(b"{}", hook(n)) == Answer(200, None, b"evt_%d" % n)
    assert resolver.calls == [(NAME, server.port)]  # resolved once, within its time to live
    assert server.connections == 1
    assert server.requests[0].header("Host") == f"{NAME}:{server.port}"


async def test_a_names_addresses_are_tried_in_order(serve: Servers, client: Clients) -> None:
    main = await serve(lambda r: response(body=b"127.0.0.1"))
    first = await serve(lambda r: response(body=b"127.0.0.3"), host="127.0.0.3", port=main.port)
    resolver = Pinned("127.0.0.3", "127.0.0.1")
    before = client(main.url(host=NAME), allow=LOOPBACK, resolver=resolver)
    assert await before.post(b"{}", hook(1)) == Answer(200, None, b"127.0.0.3")
    await first.stop()  # now 127.0.0.3 refuses: the next connection goes to 127.0.0.1
    after = client(main.url(host=NAME), allow=LOOPBACK, resolver=resolver)
    assert await after.post(b"{}", hook(2)) == Answer(200, None, b"127.0.0.1")
    assert [len(first.requests), len(main.requests)] == [1, 1]


async def test_a_name_pinned_to_ipv6(serve: Servers, client: Clients) -> None:
    server = await serve(echo, host="::1")
    endpoint = client(server.url(host=NAME), allow=LOOPBACK6, resolver=Pinned("::1"))
    assert await endpoint.post(b"{}", hook(1)) == Answer(200, None, b"evt_1")
    assert server.requests[0].header("Host") == f"{NAME}:{server.port}"


@pytest.mark.parametrize(
    "bad",
    [
        "10.0.0.1",
        "169.254.169.254",
        "::ffff:10.0.0.1",
        "0.0.0.0",
        "fe80::1%eth0",
        "nope",
        "2002:a9fe:a9fe::1",
        "64:ff9b::a00:1",
        "::ffff:0:7f00:1",
    ],
)
async def test_a_name_with_any_address_not_allowed_is_refused_before_connecting(
    serve: Servers, client: Clients, bad: str
) -> None:
    server = await serve(echo)
    good = client(server.url(host=NAME), allow=LOOPBACK, resolver=Pinned("127.0.0.1"))
    assert await good.post(b"{}", hook(1)) == Answer(200, None, b"evt_1")
    assert server.connections == 1
    for addresses in (["127.0.0.1", bad], [bad, "127.0.0.1"]):
        refused = client(server.url(host=NAME), allow=LOOPBACK, resolver=Pinned(*addresses))
        with pytest.raises(BlockedTarget) as blocked:
            await refused.post(b"{}", hook(2))
        assert blocked.value.host == NAME
    assert server.connections == 1  # no connection for the refused name


async def test_a_name_that_does_not_resolve_fails(client: Clients) -> None:
    async def failing(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(HttpError, match="cannot resolve"):
        await client(f"http://{NAME}/", allow=LOOPBACK, resolver=failing).post(b"{}", hook(1))
    with pytest.raises(HttpError, match="resolves to nothing"):
        await client(f"http://{NAME}/", allow=LOOPBACK, resolver=Pinned()).post(b"{}", hook(1))


# TLS


@dataclass
class Pki:
    """A CA (its certificate in `ca_file`) and server contexts: `good` for NAME, `other` for
    another name, `expired` for NAME but expired, `stranger` for NAME from another CA."""

    ca_file: str
    good: ssl.SSLContext
    other: ssl.SSLContext
    expired: ssl.SSLContext
    stranger: ssl.SSLContext


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _authority(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, certificate


def _server_context(
    folder: Path,
    label: str,
    authority: tuple[ec.EllipticCurvePrivateKey, x509.Certificate],
    host: str,
    expired: bool = False,
) -> ssl.SSLContext:
    ca_key, ca = authority
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    start, end = (now - datetime.timedelta(days=1), now + datetime.timedelta(days=1))
    if expired:
        start, end = now - datetime.timedelta(days=3), now - datetime.timedelta(days=2)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_file, key_file = folder / f"{label}.pem", folder / f"{label}.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(_pem(key))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    authority = _authority("wabus test CA")
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(authority[1].public_bytes(serialization.Encoding.PEM))
    return Pki(
        ca_file=str(ca_file),
        good=_server_context(tmp_path, "good", authority, NAME),
        other=_server_context(tmp_path, "other", authority, "other.test"),
        expired=_server_context(tmp_path, "expired", authority, NAME, expired=True),
        stranger=_server_context(tmp_path, "stranger", _authority("stranger CA"), NAME),
    )


async def test_tls_with_a_trusted_certificate(serve: Servers, client: Clients, pki: Pki) -> None:
    server = await serve(echo, tls=pki.good)
    endpoint = client(
        server.url(host=NAME), allow=LOOPBACK, resolver=Pinned("127.0.0.1"), ca_file=pki.ca_file
    )
    for n in range(3):
        assert await endpoint.post(b"{}", hook(n)) == Answer(200, None, b"evt_%d" % n)
    assert server.connections == 1
    assert server.requests[0].header("Host") == f"{NAME}:{server.port}"


@pytest.mark.parametrize(
    ("flaw", "trusted", "message"),
    [
        ("other", True, "no alternative certificate subject name matches"),
        ("expired", True, "certificate has expired"),
        ("stranger", True, "unable to get local issuer certificate"),
        ("good", False, "unable to get local issuer certificate"),  # the system's trust store
    ],
    ids=["host-name-mismatch", "expired", "other-ca", "untrusted"],
)
async def test_tls_certificates_are_checked(
    serve: Servers, client: Clients, pki: Pki, flaw: str, trusted: bool, message: str
) -> None:
    good = await serve(echo, tls=pki.good)
    bad = await serve(echo, tls=getattr(pki, flaw))
    ca = {"ca_file": pki.ca_file} if trusted else {}
    refused = client(bad.url(host=NAME), allow=LOOPBACK, resolver=Pinned("127.0.0.1"), **ca)
    with pytest.raises(HttpError, match=message):
        await refused.post(b"{}", hook(1))
    await bad.until(lambda: bad.open == 0)
    assert (bad.connections, bad.closed_by_client, bad.requests) == (1, 1, [])
    trusting = client(
        good.url(host=NAME), allow=LOOPBACK, resolver=Pinned("127.0.0.1"), ca_file=pki.ca_file
    )
    assert await trusting.post(b"{}", hook(2)) == Answer(200, None, b"evt_2")  # the control


# limits and timeouts


def padded(status_line: bytes, total: int) -> bytes:
    """An answer head of exactly `total` bytes: `status_line`, an `X-Pad` header, the blank line."""
    fixed = len(status_line) + len(b"X-Pad: \r\n") + len(b"\r\n")
    return status_line + b"X-Pad: " + b"p" * (total - fixed) + b"\r\n\r\n"


async def test_answer_headers_are_bounded(serve: Servers, client: Clients) -> None:
    """All answer header lines count, an interim answer's too: at the limit is fine, beyond it
    the attempt fails."""
    ok_line, hints_line = b"HTTP/1.1 204 No Content\r\n", b"HTTP/1.1 103 Early Hints\r\n"
    half = MAX_HEADER_BYTES // 2
    heads = {
        "at": padded(ok_line, MAX_HEADER_BYTES),
        "over": padded(ok_line, MAX_HEADER_BYTES + 1),
        "interim-at": padded(hints_line, half) + padded(ok_line, MAX_HEADER_BYTES - half),
        "interim-over": padded(hints_line, half) + padded(ok_line, MAX_HEADER_BYTES - half + 1),
        "huge": padded(ok_line, 3 * MAX_HEADER_BYTES),
    }
    server = await serve(lambda r: heads[r.webhook_id])
    endpoint = client(server.url(), allow=LOOPBACK)
    for case in ("at", "interim-at"):
        assert await endpoint.post(b"{}", {"webhook-id": case}) == Answer(204, None, b"")
    for case in ("over", "interim-over", "huge"):
        with pytest.raises(HttpError, match="answer headers over"):
            await endpoint.post(b"{}", {"webhook-id": case})
        assert await endpoint.post(b"{}", {"webhook-id": "at"}) == Answer(204, None, b"")
    assert [r.webhook_id for r in server.requests] == [
        "at", "interim-at", "over", "at", "interim-over", "at", "huge", "at",
    ]  # fmt: skip


async def test_answer_bodies_are_bounded(serve: Servers, client: Clients) -> None:
    limit = 1000
    body = pattern(100_000)
    chunked_body = b"".join(b"100\r\n%s\r\n" % body[i : i + 256] for i in range(0, 5120, 256))
    answers: dict[str, bytes | Reply] = {
        "exact": response(body=body[:limit]),
        "one-over": response(body=body[: limit + 1]),
        "large": response(503, headers=[("Retry-After", "30")], body=body),
        "chunked": response(headers=[("Transfer-Encoding", "chunked")], length=False)
        + chunked_body
        + b"0\r\n\r\n",
        "close-exact": Reply([response(length=False), body[:limit]], then=Then.CLOSE),
        "close-large": Reply([response(length=False), body[:5000]], then=Then.CLOSE),
        "small": response(body=b"fine"),
    }
    server = await serve(lambda r: answers[r.webhook_id])
    endpoint = client(server.url(), allow=LOOPBACK, max_body=limit)

    async def post(case: str) -> Answer:
        return await endpoint.post(b"{}", {"webhook-id": case})

    assert await post("exact") == Answer(200, None, body[:limit])
    assert await post("close-exact") == Answer(200, None, body[:limit])
    assert await post("small") == Answer(200, None, b"fine")
    assert await post("one-over") == Answer(200, None, body[:limit], truncated=True)
    assert await post("small") == Answer(200, None, b"fine")  # still usable
    assert await post("large") == Answer(503, "30", body[:limit], truncated=True)
    assert await post("chunked") == Answer(200, None, body[:limit], truncated=True)
    assert await post("close-large") == Answer(200, None, body[:limit], truncated=True)
    assert await post("small") == Answer(200, None, b"fine")


def dripping(answer: bytes, every: float = 0.1) -> Reply:
    return Reply([answer[i : i + 1] for i in range(len(answer))], pause=every)


async def test_a_slow_drip_answer_hits_the_total_timeout(serve: Servers, client: Clients) -> None:
    slow = dripping(response(body=b"slow but steady"))
    server = await serve(lambda r: slow if r.webhook_id == "evt_slow" else echo(r))
    endpoint = client(server.url(), allow=LOOPBACK, timeout=0.5)
    assert await endpoint.post(b"{}", hook(1)) == Answer(200, None, b"evt_1")
    with pytest.raises(TimeoutError):
        await settled(endpoint.post(b"{}", {"webhook-id": "evt_slow"}))
    assert await endpoint.post(b"{}", hook(2)) == Answer(200, None, b"evt_2")
    assert [r.webhook_id for r in server.requests] == ["evt_1", "evt_slow", "evt_2"]


async def test_a_server_that_never_answers_hits_the_timeout(
    serve: Servers, client: Clients
) -> None:
    server = await serve(lambda r: HANG if r.webhook_id == "evt_hang" else echo(r))
    endpoint = client(server.url(), allow=LOOPBACK, timeout=0.3)
    assert await endpoint.post(b"{}", hook(1)) == Answer(200, None, b"evt_1")
    with pytest.raises(TimeoutError):
        await settled(endpoint.post(b"{}", {"webhook-id": "evt_hang"}))
    await server.until(lambda: server.closed_by_client == 1)  # the client let go of it
    assert await endpoint.post(b"{}", hook(2)) == Answer(200, None, b"evt_2")
    assert [r.webhook_id for r in server.requests] == ["evt_1", "evt_hang", "evt_2"]


async def test_a_resolver_that_never_answers_hits_the_timeout(
    serve: Servers, client: Clients
) -> None:
    server = await serve(echo)
    answered = asyncio.Event()

    async def stuck_once(host: str, port: int) -> list[str]:
        if not answered.is_set():
            await asyncio.sleep(30)
        return ["127.0.0.1"]

    endpoint = client(server.url(host=NAME), allow=LOOPBACK, timeout=0.3, resolver=stuck_once)
    with pytest.raises(TimeoutError):
        await settled(endpoint.post(b"{}", hook(1)))
    answered.set()
    control = client(server.url(host=NAME), allow=LOOPBACK, timeout=0.3, resolver=stuck_once)
    assert await control.post(b"{}", hook(2)) == Answer(200, None, b"evt_2")
    assert [r.webhook_id for r in server.requests] == ["evt_2"]


# redirects


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_redirects_are_answers_never_followed(
    serve: Servers, client: Clients, status: int
) -> None:
    server: Server

    def redirect(request: Request) -> bytes:
        if request.line.startswith("POST /hook"):
            where = server.url("/moved") if request.webhook_id == "evt_1" else "/moved"
            return response(status, "Moved", headers=[("Location", where)], body=b"see there")
        return response(body=b"moved here")

    server = await serve(redirect)
    endpoint = client(server.url(), allow=LOOPBACK)
    for n in (1, 2):
        assert await endpoint.post(b"{}", hook(n)) == Answer(status, None, b"see there")
    assert [r.line for r in server.requests] == ["POST /hook?x=1 HTTP/1.1"] * 2
    moved = client(server.url("/moved"), allow=LOOPBACK)  # the control: /moved does answer
    assert await moved.post(b"{}", hook(3)) == Answer(200, None, b"moved here")


# the SSRF guard and other refusals


async def test_loopback_is_refused_without_an_allow_list(serve: Servers, client: Clients) -> None:
    server = await serve(no_content)
    with pytest.raises(BlockedTarget):
        await client(server.url()).post(b"{}", hook(1))
    with pytest.raises(BlockedTarget):  # a name, through the resolver given
        await client(server.url(host=NAME), resolver=Pinned("127.0.0.1")).post(b"{}", hook(1))
    with pytest.raises(BlockedTarget):  # a name, through the system's resolver
        await client(server.url(host="localhost")).post(b"{}", hook(1))
    assert server.connections == 0
    allowed = client(server.url(host="localhost"), allow=LOOPBACK + LOOPBACK6)
    assert await allowed.post(b"{}", hook(2)) == Answer(204, None, b"")  # the control
    assert server.connections == 1


@pytest.mark.parametrize(
    "host",
    [
        "10.1.2.3",
        "169.254.169.254",
        "0.0.0.0",
        "[::1]",
        "[::ffff:169.254.169.254]",
        "[fd00::1]",
        "[fe80::1]",
        "224.0.0.1",
        # IPv6 forms that carry an IPv4 address inside: judged by what they carry
        "[::127.0.0.1]",
        "[::ffff:0:7f00:1]",
        "[64:ff9b:1::7f00:1]",
        "[2002:a9fe:a9fe::1]",
        "[64:ff9b::a9fe:a9fe]",
        "[2001:0:808:808:8000:63bf:f5ff:fffe]",
    ],
)
async def test_ip_literals_not_allowed_are_refused(client: Clients, host: str) -> None:
    with pytest.raises(BlockedTarget):
        await client(f"http://{host}:8080/hook", allow=LOOPBACK).post(b"{}", hook(1))


@pytest.mark.parametrize(
    "host", ["127.1", "2130706433", "0x7f000001", "017700000001", "[::ffff:127.0.0.1]"]
)
async def test_odd_spellings_of_loopback_are_refused(
    serve: Servers, client: Clients, host: str
) -> None:
    server = await serve(no_content)
    with pytest.raises(BlockedTarget):
        await client(server.url(host=host)).post(b"{}", hook(1))
    assert server.connections == 0
    allowed = client(server.url(host=host), allow=LOOPBACK)  # the control: they are loopback
    assert await allowed.post(b"{}", hook(2)) == Answer(204, None, b"")
    assert server.connections == 1


async def test_the_socket_guard_checks_where_libcurl_really_connects(
    serve: Servers, client: Clients
) -> None:
    """`0x7f000001` is a name to the URL parser and an address to libcurl, which then connects
    to 127.0.0.1 without asking for the pinned addresses: a lying resolver (rebinding) says
    127.0.0.5, allowed; the check where libcurl opens its socket still refuses 127.0.0.1."""
    server = await serve(no_content)
    url = server.url(host="0x7f000001")
    only_5 = (ipaddress.ip_network("127.0.0.5/32"),)
    with pytest.raises(BlockedTarget, match=r"127\.0\.0\.1 is not"):
        await client(url, allow=only_5, resolver=Pinned("127.0.0.5")).post(b"{}", hook(1))
    assert server.connections == 0
    allowed = client(url, allow=LOOPBACK, resolver=Pinned("127.0.0.5"))  # the control
    assert await allowed.post(b"{}", hook(2)) == Answer(204, None, b"")
    assert server.connections == 1  # 127.0.0.1 indeed, not the pinned 127.0.0.5


async def test_connection_refused_fails(serve: Servers, client: Clients) -> None:
    server = await serve(no_content)  # listens on 127.0.0.1; nothing on 127.0.0.2
    with pytest.raises(HttpError, match="curl error 7"):
        await client(server.url(host="127.0.0.2"), allow=LOOPBACK, timeout=5).post(b"{}", hook(1))
    listening = client(server.url(), allow=LOOPBACK)
    assert await listening.post(b"{}", hook(2)) == Answer(204, None, b"")  # the control


@pytest.mark.parametrize(
    "headers",
    [
        {"webhook-id": "a\r\nX-Evil: 1"},
        {"webhook-id": "a\nX-Evil: 1"},
        {"webhook-id": "a\rX-Evil: 1"},
        {"X-Name\r\nX-Evil": "1"},
        {"webhook-id": "a\r\n\r\nGET / HTTP/1.1"},
    ],
)
async def test_header_line_breaks_are_refused(
    serve: Servers, client: Clients, headers: dict[str, str]
) -> None:
    server = await serve(no_content)
    endpoint = client(server.url(), allow=LOOPBACK)
    with pytest.raises(HttpError, match="line break"):
        await endpoint.post(b"{}", headers)
    assert await endpoint.post(b"{}", {"webhook-id": "a b;c=d"}) == Answer(204, None, b"")
    assert [(r.webhook_id, r.header("X-Evil")) for r in server.requests] == [("a b;c=d", None)]


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/",
        "file:///etc/passwd",
        "gopher://127.0.0.1:70/",
        "dict://127.0.0.1:11211/",
        "ws://example.com/",
        "http:///nohost",
        "/relative/path",
    ],
)
def test_urls_other_than_http_are_refused(url: str) -> None:
    with pytest.raises(BlockedTarget):
        EndpointClient(url)


async def test_environment_proxies_are_not_used(
    serve: Servers, client: Clients, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = await serve(lambda r: response(200, body=b"from the proxy"))
    plain = await serve(echo)
    secure = await serve(echo, tls=pki.good)
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.setenv(name, proxy.url(""))
    monkeypatch.setenv("ALL_PROXY", proxy.url(""))
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    endpoint = client(plain.url(), allow=LOOPBACK)
    assert await endpoint.post(b"{}", hook(1)) == Answer(200, None, b"evt_1")
    named = client(plain.url(host=NAME), allow=LOOPBACK, resolver=Pinned("127.0.0.1"))
    assert await named.post(b"{}", hook(2)) == Answer(200, None, b"evt_2")
    tls = client(
        secure.url(host=NAME), allow=LOOPBACK, resolver=Pinned("127.0.0.1"), ca_file=pki.ca_file
    )
    assert await tls.post(b"{}", hook(3)) == Answer(200, None, b"evt_3")
    assert proxy.connections == 0
    assert [r.webhook_id for r in plain.requests + secure.requests] == ["evt_1", "evt_2", "evt_3"]
    direct = client(proxy.url(), allow=LOOPBACK)  # the control: the proxy was there to be used
    assert await direct.post(b"{}", hook(4)) == Answer(200, None, b"from the proxy")
    assert proxy.connections == 1


# concurrency, cancellation, closing


async def test_many_concurrent_posts_get_their_own_answers(serve: Servers, client: Clients) -> None:
    def answer_in_two_writes(request: Request) -> Reply:
        answer = echo(request)
        return Reply([answer[:9], answer[9:]], pause=0.002)

    server = await serve(answer_in_two_writes)
    endpoint = client(server.url(), allow=LOOPBACK, limit=16)
    numbers = range(200)
    answers = await asyncio.gather(*(endpoint.post(b"{}", hook(n)) for n in numbers))
    assert answers == [Answer(200, None, b"evt_%d" % n) for n in numbers]
    assert sorted(r.webhook_id for r in server.requests) == sorted(f"evt_{n}" for n in numbers)
    assert 1 < server.peak <= 16  # concurrent, and within the limit
    assert server.connections <= 16


async def test_a_cancelled_request_leaves_the_client_usable(
    serve: Servers, client: Clients
) -> None:
    def answer(request: Request) -> bytes | Reply:
        if request.webhook_id == "evt_stuck":
            return HANG
        if request.webhook_id == "evt_half":  # headers and half the body, then nothing
            return Reply([response(body=b"0123456789")[:-5]], then=Then.HANG)
        return echo(request)

    server = await serve(answer)
    endpoint = client(server.url(), allow=LOOPBACK, limit=1)
    assert await endpoint.post(b"{}", hook(1)) == Answer(200, None, b"evt_1")
    for stuck in ("evt_stuck", "evt_half"):
        task = asyncio.create_task(endpoint.post(b"{}", {"webhook-id": stuck}))
        await server.received(stuck)  # in flight: sent, unanswered
        queued = asyncio.create_task(endpoint.post(b"{}", hook(99)))  # waits for the one slot
        await asyncio.sleep(0)  # it runs up to the slot
        assert not queued.done()
        queued.cancel()
        task.cancel()
        for cancelled in (task, queued):
            with pytest.raises(asyncio.CancelledError):
                await cancelled
        for n in range(2, 5):
            assert await endpoint.post(b"{}", hook(n)) == Answer(200, None, b"evt_%d" % n)
    assert [r.webhook_id for r in server.requests] == [
        "evt_1", "evt_stuck", "evt_2", "evt_3", "evt_4", "evt_half", "evt_2", "evt_3", "evt_4",
    ]  # fmt: skip
    # the abandoned connections were closed, not reused
    assert [r.connection for r in server.requests] == [0, 0, 1, 1, 1, 1, 2, 2, 2]
    await server.until(lambda: server.closed_by_client == 2)


async def test_close_ends_connections_and_requests_in_flight(
    serve: Servers, client: Clients
) -> None:
    server = await serve(lambda r: HANG if r.webhook_id.startswith("stuck") else echo(r))
    idle = client(server.url(), allow=LOOPBACK)
    assert await idle.post(b"{}", hook(1)) == Answer(200, None, b"evt_1")
    await idle.close()
    await server.until(lambda: server.closed_by_client == 1)  # its idle connection

    busy = client(server.url(), allow=LOOPBACK, limit=2)
    posts = [asyncio.create_task(busy.post(b"{}", {"webhook-id": f"stuck_{n}"})) for n in (1, 2)]
    await server.until(lambda: len(server.requests) == 3)
    await busy.close()
    for post in posts:
        with pytest.raises(HttpError, match="closed during the request"):
            await post
    await server.until(lambda: server.open == 0)
    assert (server.connections, server.closed_by_client) == (3, 3)
    assert await busy.post(b"{}", hook(2)) == Answer(200, None, b"evt_2")  # on a new connection
    assert server.connections == 4
    await busy.close()
    await busy.close()  # again: nothing to do

    asked = asyncio.Event()

    async def never(host: str, port: int) -> list[str]:
        asked.set()
        await asyncio.Event().wait()
        return []

    resolving = client(server.url(host=NAME), allow=LOOPBACK, resolver=never)
    post = asyncio.create_task(resolving.post(b"{}", hook(3)))
    await settled(asked.wait())
    await resolving.close()
    with pytest.raises(HttpError, match="closed during the request"):
        await settled(post)
    assert len(server.requests) == 4
