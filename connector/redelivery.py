"""What becomes of a command that was not carried out on this delivery, as a pure function.

JetStream counts the deliveries of every command, and the consumer's `max_deliver` bounds them.
A command that cannot be carried out *yet* (its session still coming up, another connector
holding its instance, a crash, NATS away) is handed back to the stream, except on the last
delivery: then it is given up and answered `redelivery_exhausted`, so nothing is redelivered
forever. The command runner gathers the delivery count and applies the result.
"""

from __future__ import annotations

from dataclasses import dataclass

REDELIVERY_EXHAUSTED = "redelivery_exhausted"
OPEN_WAIT = 20.0
"""How long a command waits for its session to (re)open before it is handed back to the stream."""
SESSION_NOT_OPEN = f"the instance's session did not open within {OPEN_WAIT:g} s"
LATER_DELAY = 2.0
"""Seconds before a command whose session did not open (or whose send record was busy) comes
back: the session's own wait (`OPEN_WAIT`) already took most of the time."""
RETRY_DELAY_MAX = 10.0
"""Longest delay of a hand-back that grows with the delivery count (crashes, leases)."""


@dataclass(frozen=True)
class Delivery:
    """Which delivery of a command this is, and the one that is the last."""

    number: int
    """JetStream's delivery count, 1 on the first delivery."""
    bound: int
    """The consumer's `max_deliver` (ours, or a lower one the consumer was left with)."""

    @property
    def last(self) -> bool:
        """JetStream makes no further delivery (more than the bound if it was lowered since)."""
        return self.number >= self.bound


@dataclass(frozen=True)
class Done:
    """Carried out, or answered for good: ack."""


@dataclass(frozen=True)
class HandBack:
    """Not carried out yet: back to the stream for another delivery."""

    delay: float | None
    """Seconds until it is redelivered (a `nak` with this delay); None: leave it unacked, so it
    comes back after the ack wait (NATS is away, a `nak` would be lost too)."""
    why: str


@dataclass(frozen=True)
class GiveUp:
    """The last delivery, still not carried out: answer `redelivery_exhausted`, ack."""

    why: str


Settlement = Done | HandBack | GiveUp


def later(delivery: Delivery, delay: float | None, why: str) -> HandBack | GiveUp:
    """Hand the command back for `delay` seconds, unless this is its last delivery."""
    return GiveUp(why) if delivery.last else HandBack(delay, why)


def growing_delay(delivery: Delivery) -> float:
    """A hand-back delay that grows with the deliveries so far: 1 s, 2 s, … up to 10 s, so a
    crash loop or a lease nobody takes costs little and still reaches the bound."""
    return min(float(delivery.number), RETRY_DELAY_MAX)


def exhausted_reason(delivery: Delivery, why: str) -> str:
    """The reason of a `redelivery_exhausted` answer: how many deliveries, and what failed."""
    return f"not carried out after {delivery.number} deliveries (the bound of redeliveries): {why}"
