"""The per-address buckets of the failed-authentication guard: bounded memory, no bucket for a
mere look, and which addresses share a bucket."""

from __future__ import annotations

import pytest

from relay.middleware.guard import client_key
from relay.ratelimit import RateLimiter


def test_buckets_are_bounded_and_the_least_recently_used_goes_first() -> None:
    limiter = RateLimiter(rate=1.0, burst=1, capacity=3)
    for key in ("a", "b", "c"):
        assert limiter.take(key, 0.0) == 0.0
    assert limiter.take("a", 0.0) > 0  # "a" is empty, and now the most recently used
    limiter.take("d", 0.0)  # a fourth bucket drops the least recently used: "b"
    assert len(limiter) == 3
    assert limiter.take("b", 0.0) == 0.0  # "b" starts full again ...
    assert limiter.take("a", 0.0) > 0  # ... while "a" was kept: it is still empty


def test_many_addresses_never_grow_the_table_past_its_capacity() -> None:
    limiter = RateLimiter(rate=0.1, burst=100, capacity=1_000)
    for number in range(50_000):
        limiter.take(f"10.{number >> 16}.{(number >> 8) & 255}.{number & 255}", 0.0)
    assert len(limiter) == 1_000


def test_wait_looks_without_spending_or_remembering() -> None:
    limiter = RateLimiter(rate=1.0, burst=2)
    assert limiter.wait("never-seen", 0.0) == 0.0
    assert len(limiter) == 0
    limiter.take("k", 0.0)
    limiter.take("k", 0.0)
    assert limiter.wait("k", 0.0) == 1.0
    assert limiter.wait("k", 0.0) == 1.0  # looking spent nothing
    assert limiter.wait("k", 0.5) == 0.5
    assert limiter.wait("k", 1.0) == 0.0


@pytest.mark.parametrize(
    ("client", "key"),
    [
        (("203.0.113.7", 1), "203.0.113.7"),
        (("2001:db8:1:2:aaaa::1", 1), "2001:db8:1:2::/64"),
        (("2001:db8:1:2:ffff::9", 1), "2001:db8:1:2::/64"),  # same /64, same bucket
        (("2001:db8:1:3::1", 1), "2001:db8:1:3::/64"),
        (("::ffff:203.0.113.7", 1), "203.0.113.7"),  # IPv4-mapped counts as its IPv4 address
        (("not-an-address", 1), "not-an-address"),
        (None, ""),
    ],
)
def test_which_clients_share_a_bucket(client: tuple[str, int] | None, key: str) -> None:
    assert client_key({"type": "http", "client": client}) == key
