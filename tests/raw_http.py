"""HTTP/1.1 requests written byte by byte, for headers no client library would send (non-ASCII,
NUL, huge): what reaches the relay is exactly what the test chose."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class RawResponse:
    status: int
    """0 when the server closed the connection without an answer."""
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def from_relay(self) -> bool:
        """Answered by the relay's app (its middleware adds a request id), not by the HTTP
        server's parser refusing the request before any app saw it."""
        return "x-request-id" in self.headers


async def raw_request(
    url: str,
    method: str,
    target: str,
    headers: list[tuple[bytes, bytes]],
    body: bytes = b"",
    timeout: float = 30.0,
) -> RawResponse:
    """Send one request on a fresh connection (`Connection: close`) and read the whole answer."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    reader, writer = await asyncio.open_connection(host, port)
    try:
        head = [f"{method} {target} HTTP/1.1".encode(), f"Host: {host}:{port}".encode()]
        head += [name + b": " + value for name, value in headers]
        head += [f"Content-Length: {len(body)}".encode(), b"Connection: close"]
        writer.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):  # the server closed first: answer read
            await writer.wait_closed()
    return _parse(answer)


def _parse(answer: bytes) -> RawResponse:
    if not answer:
        return RawResponse(0, {}, b"")
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawResponse(status, headers, body)
