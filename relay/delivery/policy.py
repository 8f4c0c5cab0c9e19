"""The delivery policy: what to do after one attempt, as a pure function of its result.

No HTTP, NATS or database here: the dispatcher gathers the inputs (attempt number, status code,
`Retry-After`, the clock) and applies the decision, so every rule is tested from a table.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

JITTER = 0.2
"""A retry waits its scheduled delay ±20%, so endpoints that failed together do not all come back
at the same instant."""
MAX_RETRY_AFTER_SECONDS = 3_600.0
"""A `Retry-After` is honoured up to an hour; a longer one is cut to that."""
RETRY_AFTER_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class Delivered:
    """2xx: done."""


@dataclass(frozen=True)
class RetryIn:
    """Failed; try again after `seconds`."""

    seconds: float
    reason: str


@dataclass(frozen=True)
class DeadLetter:
    """Failed on the last attempt of the schedule: to `WA_DLQ`."""

    reason: str


@dataclass(frozen=True)
class DisableEndpoint:
    """410 Gone: the receiver asked never to be called again."""


Decision = Delivered | RetryIn | DeadLetter | DisableEndpoint


def failure_reason(status: int | None, error: str | None) -> str:
    if status is None:
        return error or "no response"
    if 300 <= status < 400:
        return f"HTTP {status} (redirects are not followed)"
    return f"HTTP {status}"


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """`Retry-After` as seconds from `now` (delta-seconds or an HTTP date); None when absent or
    unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # not "¹²", which isdigit() accepts, float() not
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def jittered(seconds: float, rand: Callable[[], float] = random.random) -> float:
    return seconds * (1 - JITTER + 2 * JITTER * rand())


def decide(
    attempt: int,
    status: int | None,
    schedule: Sequence[float],
    *,
    error: str | None = None,
    retry_after: str | None = None,
    now: datetime,
    rand: Callable[[], float] = random.random,
) -> Decision:
    """The decision after attempt number `attempt` (1-based) answered `status` (None: no answer).

    `schedule[i]` is the delay before attempt i + 1 (the first is usually 0), so the schedule's
    length is the number of attempts.
    """
    if status is not None and 200 <= status < 300:
        return Delivered()
    if status == 410:
        return DisableEndpoint()
    reason = failure_reason(status, error)
    if attempt >= len(schedule):
        return DeadLetter(reason)
    delay = jittered(schedule[attempt], rand)
    if status in RETRY_AFTER_STATUSES:
        asked = retry_after_seconds(retry_after, now)
        if asked is not None:
            delay = min(asked, MAX_RETRY_AFTER_SECONDS)
            reason += f", Retry-After {asked:g}s"
    return RetryIn(delay, reason)
