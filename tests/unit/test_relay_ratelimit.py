from __future__ import annotations

from relay.ratelimit import RateLimiter


def test_burst_then_steady_rate() -> None:
    limiter = RateLimiter(rate=10.0, burst=3)
    assert [limiter.take("k", 100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("k", 100.0) == 0.1  # one token arrives every 0.1 s
    assert limiter.take("k", 100.125) == 0.0
    assert limiter.take("k", 100.125) > 0


def test_keys_are_independent_and_refill_caps_at_burst() -> None:
    limiter = RateLimiter(rate=1.0, burst=2)
    limiter.take("a", 0.0)
    limiter.take("a", 0.0)
    assert limiter.take("a", 0.0) > 0
    assert limiter.take("b", 0.0) == 0.0
    # a long pause refills to the burst, not beyond it
    assert [limiter.take("a", 1000.0) for _ in range(3)][2] > 0


def test_zero_rate_disables_the_limit() -> None:
    limiter = RateLimiter(rate=0.0, burst=1)
    assert all(limiter.take("k", 0.0) == 0.0 for _ in range(1000))
