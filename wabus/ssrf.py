"""SSRF guard for requests to URLs users supply (webhook targets, media to send by URL).

A target may only resolve to global unicast addresses, unless an operator allow-listed its range
(`WABUS_WEBHOOK_ALLOW_CIDRS`, e.g. `127.0.0.0/8` for local development). Names are checked where
they are resolved, by the resolver aiohttp connects with, so the connection goes to the very
addresses that were checked — a DNS answer that changes between a check and the connect
(rebinding) cannot slip through. aiohttp never asks the resolver about IP literals, so
`check_url` must run before each request too.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from yarl import URL

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class BlockedTarget(OSError):
    """A URL whose host is, or resolves to, an address outside what may be reached.

    An `OSError`, so aiohttp reports it like any connect failure (wrapped in
    `ClientConnectorError`, the original in `.os_error`).
    """

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"refused target {host!r}: {reason}")
        self.host = host
        self.reason = reason


def address_allowed(address: Address, allow: Sequence[Network] = ()) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    if any(address in network for network in allow if network.version == address.version):
        return True
    return address.is_global and not address.is_multicast


def check_address(host: str, address: str, allow: Sequence[Network] = ()) -> None:
    try:
        parsed = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError as error:
        raise BlockedTarget(host, f"unparseable address {address!r}") from error
    if not address_allowed(parsed, allow):
        raise BlockedTarget(host, f"{parsed} is not a global address and not allow-listed")


def check_url(url: str, allow: Sequence[Network] = ()) -> None:
    """Refuse non-HTTP(S) URLs and IP-literal hosts outside what may be reached."""
    parsed = URL(url)
    if parsed.scheme not in {"http", "https"} or not parsed.host:
        raise BlockedTarget(url, "only http(s) URLs with a host are allowed")
    host = parsed.host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return  # a name: the resolver checks what it resolves to
    check_address(host, host, allow)


class GuardedResolver(AbstractResolver):
    """Resolves like aiohttp's threaded resolver, refusing any disallowed answer."""

    def __init__(
        self, allow: Sequence[Network] = (), inner: AbstractResolver | None = None
    ) -> None:
        self._allow = tuple(allow)
        self._inner = inner or ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            check_address(host, result["host"], self._allow)
        return results

    async def close(self) -> None:
        await self._inner.close()


def guarded_connector(allow: Sequence[Network] = (), **options: object) -> aiohttp.TCPConnector:
    """A TCP connector whose every connection passed the guard (pair it with `check_url`)."""
    return aiohttp.TCPConnector(resolver=GuardedResolver(allow), **options)  # type: ignore[arg-type]
