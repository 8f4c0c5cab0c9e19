"""Hand back or give up, from a table: the delivery bound of commands, without JetStream."""

from __future__ import annotations

import pytest

from connector.redelivery import (
    RETRY_DELAY_MAX,
    Delivery,
    GiveUp,
    HandBack,
    exhausted_reason,
    growing_delay,
    later,
)


@pytest.mark.parametrize(
    ("delivery", "delay", "expected"),
    [
        (Delivery(1, 20), 2.0, HandBack(2.0, "why")),
        (Delivery(19, 20), 2.0, HandBack(2.0, "why")),
        (Delivery(20, 20), 2.0, GiveUp("why")),  # the last delivery
        (Delivery(25, 20), 2.0, GiveUp("why")),  # beyond a bound lowered since
        (Delivery(1, 1), 2.0, GiveUp("why")),  # a bound of one: the first is the last
        (Delivery(3, 20), None, HandBack(None, "why")),  # left to the ack wait
        (Delivery(20, 20), None, GiveUp("why")),
    ],
)
def test_later(delivery: Delivery, delay: float | None, expected: HandBack | GiveUp) -> None:
    assert later(delivery, delay, "why") == expected


@pytest.mark.parametrize(
    ("number", "seconds"), [(1, 1.0), (2, 2.0), (9, 9.0), (10, 10.0), (11, 10.0), (500, 10.0)]
)
def test_the_growing_delay_is_capped(number: int, seconds: float) -> None:
    assert growing_delay(Delivery(number, 1000)) == seconds
    assert growing_delay(Delivery(number, 1000)) <= RETRY_DELAY_MAX


def test_the_exhausted_reason_says_how_often_and_why() -> None:
    reason = exhausted_reason(Delivery(3, 3), "handling it failed on every delivery (KeyError)")
    assert reason.startswith("not carried out after 3 deliveries")
    assert reason.endswith("(KeyError)")
