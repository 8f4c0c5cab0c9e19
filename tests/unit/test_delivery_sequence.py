"""Which consumer sequences mean a delivery went missing on its way to the relay."""

from __future__ import annotations

import pytest

from relay.delivery.sequence import DeliverySequence


@pytest.mark.parametrize(
    ("expected", "seen", "lost"),
    [
        (1, [1, 2, 3], [0, 0, 0]),  # one after another: nothing lost
        (5, [5, 6, 8], [0, 0, 1]),  # 7 never arrived
        (5, [9], [4]),  # the first after the subscription began skipped four
        (5, [5, 6, 4, 5, 6, 7], [0, 0, 0, 0, 0, 0]),  # a new leader repeats: duplicates, no loss
        (5, [5, 6, 3, 5], [0, 0, 0, 1]),  # after going back, a skip still counts (4)
        (10, [3], [0]),  # behind what the consumer reported at the start: a repeat
    ],
)
def test_a_skipped_consumer_sequence_is_a_lost_delivery(
    expected: int, seen: list[int], lost: list[int]
) -> None:
    sequence = DeliverySequence(expected)
    assert [sequence.lost_before(number) for number in seen] == lost
