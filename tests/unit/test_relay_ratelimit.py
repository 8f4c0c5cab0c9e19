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


def test_a_cost_spends_that_many_tokens_and_waits_for_them() -> None:
    limiter = RateLimiter(rate=100.0, burst=1000)
    assert limiter.take("k", 0.0, 600) == 0.0
    assert limiter.take("k", 0.0, 600) == 2.0  # 200 missing at 100 a second; nothing spent
    assert limiter.take("k", 0.0, 400) == 0.0  # so the 400 left are there
    assert limiter.take("k", 0.0, 1) > 0


def test_a_cost_over_the_burst_needs_a_full_bucket_not_more() -> None:
    limiter = RateLimiter(rate=100.0, burst=1000)
    assert limiter.take("k", 0.0, 5000) == 0.0  # a full bucket pays for it
    assert limiter.take("k", 0.0, 5000) == 10.0  # then it waits for a full bucket again
    assert limiter.take("k", 10.0, 5000) == 0.0


def test_given_back_tokens_return_up_to_the_burst() -> None:
    limiter = RateLimiter(rate=1.0, burst=2)
    assert [limiter.take("k", 0.0) for _ in range(3)][2] > 0
    limiter.give_back("k")
    assert limiter.take("k", 0.0) == 0.0
    limiter.give_back("k", 50)
    assert [limiter.take("k", 0.0) for _ in range(3)] == [0.0, 0.0, 1.0]  # two, not fifty
    limiter.give_back("never seen")  # nothing was spent, nothing kept
    assert len(limiter) == 1
