"""The delivery policy, from a table: no HTTP, NATS or database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from relay.delivery.policy import (
    MAX_RETRY_AFTER_SECONDS,
    DeadLetter,
    Decision,
    Delivered,
    DisableEndpoint,
    RetryIn,
    decide,
    jittered,
    retry_after_seconds,
)

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
SCHEDULE = (0.0, 5.0, 300.0, 1800.0)


def middle() -> float:
    return 0.5  # no jitter: the scheduled delay exactly


@pytest.mark.parametrize(
    ("attempt", "status", "retry_after", "expected"),
    [
        (1, 200, None, Delivered()),
        (1, 204, None, Delivered()),
        (4, 299, None, Delivered()),
        (1, 500, None, RetryIn(5.0, "HTTP 500")),
        (2, 502, None, RetryIn(300.0, "HTTP 502")),
        (3, 404, None, RetryIn(1800.0, "HTTP 404")),
        (1, 301, None, RetryIn(5.0, "HTTP 301 (redirects are not followed)")),
        (1, None, None, RetryIn(5.0, "timeout")),
        (4, 500, None, DeadLetter("HTTP 500")),
        (4, None, None, DeadLetter("timeout")),
        (1, 410, None, DisableEndpoint()),
        (4, 410, None, DisableEndpoint()),
        (1, 429, "2", RetryIn(2.0, "HTTP 429, Retry-After 2s")),
        (2, 503, "120", RetryIn(120.0, "HTTP 503, Retry-After 120s")),
        (1, 429, "86400", RetryIn(MAX_RETRY_AFTER_SECONDS, "HTTP 429, Retry-After 86400s")),
        (1, 429, "soon", RetryIn(5.0, "HTTP 429")),
        (1, 500, "2", RetryIn(5.0, "HTTP 500")),  # only 429 and 503 are asked to wait
        (4, 429, "2", DeadLetter("HTTP 429")),
    ],
)
def test_decide(
    attempt: int, status: int | None, retry_after: str | None, expected: Decision
) -> None:
    error = "timeout" if status is None else None
    decision = decide(
        attempt, status, SCHEDULE, error=error, retry_after=retry_after, now=NOW, rand=middle
    )
    assert decision == expected


def test_jitter_stays_within_a_fifth_of_the_delay() -> None:
    assert jittered(100.0, lambda: 0.0) == pytest.approx(80.0)
    assert jittered(100.0, lambda: 1.0) == pytest.approx(120.0)
    assert jittered(0.0, lambda: 1.0) == 0.0


def test_retry_after_as_an_http_date() -> None:
    later = format_datetime(NOW + timedelta(seconds=90), usegmt=True)
    assert retry_after_seconds(later, NOW) == pytest.approx(90.0)
    assert retry_after_seconds(format_datetime(NOW - timedelta(hours=1), usegmt=True), NOW) == 0
    assert retry_after_seconds(None, NOW) is None
    assert retry_after_seconds("", NOW) is None


def test_a_one_attempt_schedule_dead_letters_the_first_failure() -> None:
    assert decide(1, 500, (0.0,), now=NOW) == DeadLetter("HTTP 500")
