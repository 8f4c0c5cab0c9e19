"""Send pacing decisions, without clocks or sleeps."""

from __future__ import annotations

import random

import pytest

from connector.pacing import Pacing, send_delay


@pytest.mark.parametrize(
    ("pacing", "last", "now", "low", "high"),
    [
        (Pacing(interval=0), 10.0, 10.0, 0.0, 0.0),  # no pacing
        (Pacing(interval=2, jitter=0), None, 10.0, 0.0, 0.0),  # the first send goes at once
        (Pacing(interval=2, jitter=0), 10.0, 10.5, 1.5, 1.5),
        (Pacing(interval=2, jitter=0), 10.0, 13.0, 0.0, 0.0),  # already long enough ago
        (Pacing(interval=2, jitter=0.5), 10.0, 10.0, 1.0, 3.0),
    ],
)
def test_send_delay(
    pacing: Pacing, last: float | None, now: float, low: float, high: float
) -> None:
    rng = random.Random(3)
    delays = [send_delay(pacing, last, now, rng) for _ in range(100)]
    assert all(low <= d <= high for d in delays)


def test_jitter_varies_the_gap() -> None:
    rng = random.Random(3)
    delays = {
        round(send_delay(Pacing(interval=1, jitter=0.3), 0.0, 0.0, rng), 6) for _ in range(50)
    }
    assert len(delays) > 40
