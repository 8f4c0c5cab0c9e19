"""Token buckets kept in this process: per API key (its requests, and the bytes of their
bodies) and per client address (failed authentications, `relay.middleware.guard`).

Why in process and not in NATS: a shared counter would add a NATS round trip to every request,
the hot path this relay is measured on. The cost is that the limit holds per relay process: with
R replicas of W workers each, one key can reach up to R * W * the configured rate. Operators set
`WABUS_RATE_LIMIT` to the total they want divided by R * W (docs/api.md says so).

Memory is bounded: at most `capacity` buckets are kept, the least recently used dropped first. A
dropped bucket is one that starts full again, so an attacker spreading over more addresses than
that only resets buckets that had the most time to refill anyway.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

DEFAULT_CAPACITY = 65_536


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass
class RateLimiter:
    """`rate` tokens per second up to `burst`; `rate == 0` disables the limit."""

    rate: float
    burst: int
    capacity: int = DEFAULT_CAPACITY
    _buckets: OrderedDict[str, _Bucket] = field(default_factory=OrderedDict)

    def _refilled(self, key: str, now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(self.burst), now)
            if len(self._buckets) > self.capacity:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket.tokens = min(
                float(self.burst), bucket.tokens + (now - bucket.updated) * self.rate
            )
            bucket.updated = now
        return bucket

    def take(self, key: str, now: float, cost: float = 1.0) -> float:
        """Spend `cost` tokens for `key`; 0.0 when allowed (then spent), else the seconds until
        they are there (nothing spent). A cost over `burst` needs a full bucket: a request
        larger than the burst is slowed down, never refused for ever."""
        if self.rate <= 0:
            return 0.0
        bucket = self._refilled(key, now)
        cost = min(cost, float(self.burst))
        if bucket.tokens >= cost:
            bucket.tokens -= cost
            return 0.0
        return (cost - bucket.tokens) / self.rate

    def give_back(self, key: str, cost: float = 1.0) -> None:
        """Return what `take` spent for a request then refused on other grounds (up to the
        burst)."""
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket.tokens = min(float(self.burst), bucket.tokens + cost)

    def wait(self, key: str, now: float) -> float:
        """Seconds until `key` has a token, spending nothing (0.0 when it has one now).

        A key never seen costs no memory: only `take` creates buckets."""
        if self.rate <= 0:
            return 0.0
        bucket = self._buckets.get(key)
        if bucket is None:
            return 0.0
        tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.rate)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def __len__(self) -> int:
        return len(self._buckets)
