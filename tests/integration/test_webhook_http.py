"""The lean webhook HTTP client against real local servers: keep-alive reuse, chunked and
close-delimited answers, an endpoint that closes idle connections, TLS, limits and refusals."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from relay.delivery.http import EndpointClient, HttpError
from wabus.ssrf import BlockedTarget

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)
Answerer = Callable[[bytes], bytes]
Serve = Callable[..., Awaitable[str]]


class Server:
    """A raw HTTP/1.1 server: `answer(request bytes)` gives the bytes to send back; after each
    answer the connection is closed when `close_after` says so."""

    def __init__(self, answer: Answerer, close_after: bool = False) -> None:
        self.answer = answer
        self.close_after = close_after
        self.connections = 0
        self.requests: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                writer.write(self.answer(request))
                await writer.drain()
                if self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            await writer.wait_closed()


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[asyncio.Server] = []

    async def start(server: Server, tls: ssl.SSLContext | None = None) -> str:
        listening = await asyncio.start_server(server.handle, "127.0.0.1", 0, ssl=tls)
        servers.append(listening)
        port = listening.sockets[0].getsockname()[1]
        return f"{'https' if tls else 'http'}://127.0.0.1:{port}/hook?x=1"

    yield start
    for listening in servers:
        listening.close()


def ok(request: bytes) -> bytes:
    return b"HTTP/1.1 204 No Content\r\n\r\n"


async def test_connections_are_kept_alive_and_reused(serve: Serve) -> None:
    server = Server(ok)
    url = await serve(server)
    client = EndpointClient(url, allow=LOOPBACK, limit=4)
    for _ in range(20):
        answer = await client.post(b'{"a":1}', {"webhook-id": "evt_1"})
        assert answer.status == 204
    client.close()
    assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"POST /hook?x=1 HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"webhook-id: evt_1\r\n" in first
    assert first.endswith(b'Content-Length: 7\r\n\r\n{"a":1}')


async def test_chunked_and_close_delimited_answers_are_read_whole(
    serve: Serve,
) -> None:
    chunked = Server(
        lambda request: (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nRetry-After: 7\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )
    )
    closing = Server(
        lambda request: b"HTTP/1.1 503 Busy\r\nConnection: close\r\n\r\nlater", close_after=True
    )
    for server, expected in (
        (chunked, (200, "7", b"hello world")),
        (closing, (503, None, b"later")),
    ):
        client = EndpointClient(await serve(server), allow=LOOPBACK)
        for _ in range(3):
            answer = await client.post(b"{}", {})
            assert (answer.status, answer.retry_after, answer.body) == expected
        client.close()
    assert chunked.connections == 1
    assert closing.connections == 3  # `Connection: close` is honoured


async def test_an_endpoint_closing_idle_connections_causes_no_failure(
    serve: Serve,
) -> None:
    server = Server(ok, close_after=True)  # closes after each answer, without saying so
    client = EndpointClient(await serve(server), allow=LOOPBACK)
    for _ in range(5):
        assert (await client.post(b"{}", {})).status == 204
        await asyncio.sleep(0.05)  # the close arrives before the next request
    client.close()
    assert server.connections == 5


async def test_answers_are_bounded_and_timeouts_are_total(serve: Serve) -> None:
    big = Server(
        lambda request: b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100000
    )
    client = EndpointClient(await serve(big), allow=LOOPBACK, max_body=1000)
    assert len((await client.post(b"{}", {})).body) == 1000
    client.close()

    async def never(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # reads the request, never answers, until the client gives up
        writer.close()
        await writer.wait_closed()

    silent = await asyncio.start_server(never, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    client = EndpointClient(f"http://127.0.0.1:{port}/", allow=LOOPBACK, timeout=0.3)
    with pytest.raises(TimeoutError):
        await client.post(b"{}", {})
    client.close()
    silent.close()


async def test_refusals(serve: Serve) -> None:
    url = await serve(Server(ok))
    with pytest.raises(BlockedTarget):  # loopback is not allowed by default
        await EndpointClient(url).post(b"{}", {})
    with pytest.raises(BlockedTarget):  # names are checked where they are resolved
        await EndpointClient(url.replace("127.0.0.1", "localhost")).post(b"{}", {})
    with pytest.raises(BlockedTarget):
        EndpointClient("ftp://example.com/")
    with pytest.raises(HttpError, match="line break"):
        await EndpointClient(url, allow=LOOPBACK).post(b"{}", {"webhook-id": "a\r\nX-Evil: 1"})
    closed_port = url.rsplit(":", 1)[1].split("/")[0]
    with pytest.raises(HttpError, match="connect failed"):
        await EndpointClient(f"http://127.0.0.2:{closed_port}/", allow=LOOPBACK, timeout=2).post(
            b"{}", {}
        )


def _certificates(folder: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a certificate for 127.0.0.1 and a client context trusting it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cafile=str(cert_file))
    return server, client


async def test_tls_endpoints_are_verified(serve: Serve, tmp_path: Path) -> None:
    server_tls, trusting = _certificates(tmp_path)
    url = await serve(Server(ok), server_tls)
    client = EndpointClient(url, allow=LOOPBACK, ssl_context=trusting)
    assert (await client.post(b"{}", {})).status == 204
    client.close()
    with pytest.raises(HttpError, match="CERTIFICATE_VERIFY_FAILED"):
        await EndpointClient(url, allow=LOOPBACK).post(b"{}", {})  # the system's trust store
