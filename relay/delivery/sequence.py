"""Noticing deliveries lost between JetStream and this relay.

A durable consumer numbers every delivery it makes (its consumer sequence, redeliveries included),
and only the lease holder fetches from an endpoint's consumer, so the holder sees those numbers
one after another. A number skipped means a delivery never arrived: it was in the connection to a
NATS node that died, or in a pull answer cut short. JetStream counts it as delivered and gives it
back only after the acknowledgement window, so a chat's later events would overtake it. A number
seen again or going back is a new consumer leader repeating deliveries its followers had not
recorded: nothing lost, the repeats are duplicates (receivers deduplicate on `webhook-id`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DeliverySequence:
    """The consumer sequence this relay expects next from one subscription."""

    expected: int
    """One more than the consumer's last delivery when the subscription began."""

    def lost_before(self, delivered: int) -> int:
        """How many deliveries went missing before the one numbered `delivered` (0: none)."""
        lost = max(0, delivered - self.expected)
        self.expected = delivered + 1
        return lost
