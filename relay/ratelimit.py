"""Per-key rate limiting: a token bucket per API key, kept in this process.

Why in process and not in NATS: a shared counter would add a NATS round trip to every request,
the hot path this relay is measured on. The cost is that the limit holds per relay process: with
R replicas of W workers each, one key can reach up to R * W * the configured rate. Operators set
`WABUS_RATE_LIMIT` to the total they want divided by R * W (docs/api.md says so).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass
class RateLimiter:
    """`rate` tokens per second up to `burst`; `rate == 0` disables the limit."""

    rate: float
    burst: int
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def take(self, key: str, now: float) -> float:
        """Spend one token for `key`; 0.0 when allowed, else the seconds until one is free."""
        if self.rate <= 0:
            return 0.0
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(self.burst), now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate
