"""SSRF guard for requests to URLs users supply (webhook targets, media to send by URL).

A target may only be an address that is global, and so must every IPv4 address the target
embeds, unless an operator allow-listed its range (`WABUS_WEBHOOK_ALLOW_CIDRS`, e.g.
`127.0.0.0/8` for local development). "Global" is decided by the tables below (the IANA
special-purpose registries), not by `ipaddress.is_global`: that answer differs between Python
versions and calls `::127.0.0.1`, `2002:7f00:1::1`, `64:ff9b::7f00:1` and `::ffff:0:7f00:1`
global on 3.11 — IPv6 spellings of loopback. Names are checked where they are resolved, by the
resolver aiohttp connects with, so the connection goes to the very addresses that were checked
— a DNS answer that changes between a check and the connect (rebinding) cannot slip through.
aiohttp never asks the resolver about IP literals, so `check_url` must run before each request
too.
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


def _networks(*cidrs: str) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(cidr) for cidr in cidrs)


_IPV4_NOT_GLOBAL = _networks(
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15",
    "198.51.100.0/24", "203.0.113.0/24",
    "224.0.0.0/4",  # multicast
    "240.0.0.0/4",  # reserved, and the broadcast address
)  # fmt: skip
"""IPv4 ranges the IANA registry does not mark globally reachable (plus multicast): private,
shared (CGN), loopback, link-local (cloud metadata at 169.254.169.254), documentation,
benchmarking, the deprecated 6to4 relay anycast, reserved."""
_IPV4_GLOBAL_INSIDE = _networks("192.0.0.9/32", "192.0.0.10/32")

_IPV6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
"""The only IPv6 space allocated for global unicast: everything outside it (`::/8` with `::`,
`::1` and the deprecated IPv4 forms, ULA `fc00::/7`, link-local `fe80::/10`, site-local
`fec0::/10`, multicast `ff00::/8`, discard `100::/64`, SRv6 `5f00::/16`, unassigned space) is
refused, but for the NAT64 well-known prefix below."""
_IPV6_NOT_GLOBAL = _networks("2001::/23", "2001:db8::/32", "3fff::/20")
"""IETF protocol assignments and documentation, inside `2000::/3`."""
_IPV6_GLOBAL_INSIDE = _networks(
    "2001:1::1/128", "2001:1::2/128", "2001:1::3/128", "2001:3::/32", "2001:4:112::/48",
    "2001:20::/28", "2001:30::/28",
)  # fmt: skip
TEREDO = ipaddress.IPv6Network("2001::/32")
SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
_ROUTED_TO_EMBEDDED = (TEREDO, SIX_TO_FOUR, NAT64)
"""Forms a packet crosses to reach the IPv4 address they embed: global exactly when every IPv4
address they embed is."""
_LAST_32_BITS = (IPV4_COMPATIBLE, IPV4_TRANSLATED, NAT64, NAT64_LOCAL)


def embedded_ipv4(address: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses a packet sent to `address` may end up at: so that an IPv6 spelling of
    loopback, a private or a metadata address is judged by the address it really reaches.

    IPv4-mapped (`::ffff:0:0/96`), IPv4-compatible (`::/96`, but `::` and `::1`),
    IPv4-translated (`::ffff:0:0:0/96`) and NAT64 (`64:ff9b::/96`, `64:ff9b:1::/48`) carry it in
    their last 32 bits, 6to4 (`2002::/16`) in bits 16-48, Teredo (`2001::/32`) two: the server's
    and the client's (stored inverted)."""
    if address.ipv4_mapped is not None:
        return (address.ipv4_mapped,)
    if address.teredo is not None:
        return address.teredo
    if address.sixtofour is not None:
        return (address.sixtofour,)
    if int(address) > 1 and any(address in network for network in _LAST_32_BITS):
        return (ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF),)
    return ()


def is_global(address: Address) -> bool:
    """Whether `address` may be reached without an allow-list entry, the IPv4 addresses it
    embeds aside (see `refusal`), by the same rule on every Python version."""
    if isinstance(address, ipaddress.IPv4Address):
        return _in(address, _IPV4_GLOBAL_INSIDE) or not _in(address, _IPV4_NOT_GLOBAL)
    if _in(address, _ROUTED_TO_EMBEDDED):
        return True
    if address not in _IPV6_GLOBAL_UNICAST:
        return False
    return _in(address, _IPV6_GLOBAL_INSIDE) or not _in(address, _IPV6_NOT_GLOBAL)


def _in(address: Address, networks: Sequence[Network]) -> bool:
    return any(address in network for network in networks if network.version == address.version)


def refusal(address: Address, allow: Sequence[Network] = ()) -> str | None:
    """Why `address` may not be reached, or None when it may.

    It may when it is allow-listed or global, and so is every IPv4 address it embeds. An
    IPv4-mapped address is its IPv4 address (`::ffff:127.0.0.1` is `127.0.0.1`, allow-listed by
    `127.0.0.0/8`); an embedded IPv4 address is judged as it would be on its own, so an IPv4
    allow-list entry opens it inside a form that passes by itself (`2002:7f00:1::1` with
    `127.0.0.0/8`), while an IPv6 entry never opens the IPv4 addresses inside its range. The
    unspecified addresses (`0.0.0.0`, `::`) reach this host and pass no allow-list."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    embedded = embedded_ipv4(address) if isinstance(address, ipaddress.IPv6Address) else ()
    if not _passes(address, allow):
        inside = f" (it embeds {', '.join(map(str, embedded))})" if embedded else ""
        return f"{address} is not a global address and not allow-listed{inside}"
    for inner in embedded:
        if not _passes(inner, allow):
            return f"{address} embeds {inner}, which is not a global address and not allow-listed"
    return None


def _passes(address: Address, allow: Sequence[Network]) -> bool:
    return not address.is_unspecified and (_in(address, allow) or is_global(address))


def address_allowed(address: Address, allow: Sequence[Network] = ()) -> bool:
    """Whether a connection to `address` may be made (see `refusal`)."""
    return refusal(address, allow) is None


def check_address(host: str, address: str, allow: Sequence[Network] = ()) -> None:
    """Raise `BlockedTarget` unless `address` (what `host` resolved to) may be reached."""
    try:
        parsed = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError as error:
        raise BlockedTarget(host, f"unparseable address {address!r}") from error
    reason = refusal(parsed, allow)
    if reason is not None:
        raise BlockedTarget(host, reason)


def check_url(url: str, allow: Sequence[Network] = ()) -> None:
    """Refuse non-HTTP(S) URLs and IP-literal hosts outside what may be reached (`BlockedTarget`);
    names are left to the resolver. A host the system reads as an IPv4 address though it is not
    one in dotted-quad form (`127.1`, `0x7f000001`, `2130706433`) is checked as that address. A
    URL that does not parse (a bad port, a broken IPv6 literal) raises `ValueError`: it is
    invalid input, not a blocked target."""
    try:
        parsed = URL(url)
        host, _ = parsed.host, parsed.port  # both parse lazily: a bad one raises here
    except IndexError as error:  # yarl's answer to some broken authorities (`http://[v1.x]@`)
        raise ValueError(f"not a valid URL: {url[:200]!r}") from error
    if parsed.scheme not in {"http", "https"} or not host:
        raise BlockedTarget(url, "only http(s) URLs with a host are allowed")
    literal = host.strip("[]")
    address = _numeric_host(literal)
    if address is not None:
        check_address(literal, str(address), allow)


def _numeric_host(host: str) -> Address | None:
    """The address `host` spells, as `ipaddress` or the C library's `inet_aton` (which name
    resolution and libcurl use) reads it; None for a name."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, ValueError):  # not an IPv4 spelling (OSError), a NUL in it (ValueError)
        return None


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
