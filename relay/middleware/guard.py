"""A limit on failed authentication per client address: guessers are slowed down, and a flood
of bad signatures is refused before its body is read or any HMAC computed.

Every 401 answer spends a token of the client's bucket (`WABUS_AUTH_FAILURE_LIMIT` per
`WABUS_AUTH_FAILURE_WINDOW` seconds, the Node design's 100 per 15 minutes); while the bucket is
empty every request from that client is answered 429 `too_many_failed_requests` with
Retry-After and `Connection: close`, except the health probes. Signed requests from other
addresses are never touched: the check is one dictionary look-up.

The client is the peer address, or the address `X-Forwarded-For` names when the peer is one of
`WABUS_TRUSTED_PROXIES` (uvicorn's proxy-headers middleware, placed before this one, rewrites
it). IPv6 clients are counted per /64, the block one subscriber usually holds, so that walking
through one's own addresses buys nothing. The buckets are bounded (`relay.ratelimit`).
"""

from __future__ import annotations

import functools
import ipaddress
import math
import time

from prometheus_client import Counter
from starlette.types import Scope

from relay.problems import Problem
from relay.ratelimit import DEFAULT_CAPACITY, RateLimiter
from wabus.logs import get_logger

log = get_logger(__name__)

EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
"""Probes, which never answer 401: a blocked address that is also a prober keeps probing."""
REFUSED = Counter(
    "wabus_http_refused_failed_auth_total",
    "Requests refused with 429 because their client address failed authentication too often",
)
FAILED = Counter(
    "wabus_http_failed_auth_total", "Requests answered 401 (failed or missing authentication)"
)


def client_key(scope: Scope) -> str:
    """The bucket of a request's client: its address, or its /64 for IPv6."""
    client = scope.get("client")
    return _bucket_of(client[0] if client else "")


@functools.lru_cache(maxsize=4096)
def _bucket_of(host: str) -> str:
    """Cached: parsing an address costs more than the rest of the guard, and a busy client
    sends many requests from one address."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host[:64]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class FailedAuthGuard:
    """The per-address buckets and their decisions; `relay.middleware.edge` applies them."""

    def __init__(self, limit: int, window: float, capacity: int = DEFAULT_CAPACITY) -> None:
        self.limit = limit
        self.window = window
        self.buckets = RateLimiter(limit / window if limit else 0.0, max(limit, 1), capacity)

    def applies(self, scope: Scope) -> bool:
        """False when the guard is off, or for the health probes."""
        return bool(self.limit) and scope["path"] not in EXEMPT_PATHS

    def wait(self, key: str) -> float:
        """Seconds `key` is refused for (0.0: not refused)."""
        return self.buckets.wait(key, time.monotonic())

    def failed(self, key: str) -> None:
        """A 401 was answered to `key`: spend one of its tokens."""
        FAILED.inc()
        now = time.monotonic()
        self.buckets.take(key, now)
        if self.buckets.wait(key, now):
            log.warning(
                "client refused after failed authentications",
                client=key,
                limit=self.limit,
                window_seconds=self.window,
            )

    def refusal(self, wait: float) -> Problem:
        """The 429 for a refused client (and its count)."""
        REFUSED.inc()
        return Problem(
            429,
            "too_many_failed_requests",
            f"too many failed authentications from this client (at most {self.limit} per "
            f"{self.window:g}s); retry after {math.ceil(wait)}s",
            headers={"Retry-After": str(math.ceil(wait)), "Connection": "close"},
        )
