"""Send pacing per instance (anti-ban): a minimum interval between sends, with jitter.

WhatsApp flags accounts that send in machine-regular bursts. A burst of commands is therefore
queued and released one at a time, each `interval * (1 ± jitter)` after the previous one. The
decision is a pure function; the command lanes sleep on it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Pacing:
    interval: float = 0.0
    """Seconds between two sends of one instance; 0 sends as fast as WhatsApp answers."""
    jitter: float = 0.3
    """Fraction of `interval` added or removed at random."""
    typing: float = 0.0
    """Seconds of "typing…" shown before each text send; 0 shows none."""


def send_delay(pacing: Pacing, last_sent_at: float | None, now: float, rng: random.Random) -> float:
    """Seconds to wait before the next send, given when the previous one went out."""
    if last_sent_at is None or pacing.interval <= 0:
        return 0.0
    spread = pacing.interval * pacing.jitter
    gap = pacing.interval + rng.uniform(-spread, spread)
    return max(0.0, last_sent_at + gap - now)
