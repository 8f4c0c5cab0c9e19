"""The session lifecycle as a pure state machine: what each report of a session does to its state.

The supervisor feeds it what happened (`Connecting`, `QrShown`, `PairCodeIssued`, `Opened`,
`Closed`) and the time, and applies the answer (write the status, publish the event, wait until
`retry_at` and connect again). No I/O and no clock of its own, so every transition is tested from
a table. A close may carry `not_before` (a temporary ban's end): no reconnect is planned before it.

    connecting ──qr──▶ qr ──(refresh > max)──▶ failed(qr_exhausted)
        │   ▲            │ pair code ──▶ pairing
        │   └─ closed ◀──┴── transient close (network, …): backoff, attempt + 1
        └──▶ open ──▶ closed / logged_out (wipes session) / failed (permanent) / stopped (by wabus)
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from connector.reasons import DisconnectReason
from schemas.instances import SessionState


@dataclass(frozen=True)
class Policy:
    """Knobs of the lifecycle (from settings): QR patience and the reconnect backoff."""

    qr_max_refreshes: int = 5
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    max_attempts: int = 0
    """Consecutive failed connects before giving up; 0 retries forever."""


def reconnect_delay(
    attempt: int, rng: random.Random, base: float = 1.0, cap: float = 60.0
) -> float:
    """Seconds to wait before connect attempt `attempt` (1, 2, …): capped exponential backoff
    with "equal jitter" — half fixed so retries never bunch at zero, half random so many sessions
    that dropped together do not reconnect together."""
    ceiling = min(cap, base * 2.0 ** max(attempt - 1, 0))
    return ceiling / 2 + rng.random() * ceiling / 2


@dataclass(frozen=True)
class Lifecycle:
    """Where a session is, and why."""

    state: SessionState = SessionState.CONNECTING
    reason: DisconnectReason | None = None
    detail: str | None = None
    attempt: int = 0
    """Consecutive failed connects (0 once open)."""
    qr_refreshes: int = 0
    """QR codes shown so far in this pairing attempt."""
    retry_at: datetime | None = None
    """Set when `state` is `closed`: when to connect again (never before a close's `not_before`)."""

    @property
    def terminal(self) -> bool:
        """Nothing more happens until a person (or a config change) acts."""
        return self.state in _TERMINAL

    @property
    def will_reconnect(self) -> bool:
        return self.state is SessionState.CLOSED


_TERMINAL = frozenset({SessionState.LOGGED_OUT, SessionState.FAILED, SessionState.STOPPED})


@dataclass(frozen=True)
class Connecting:
    """A connect attempt starts."""


@dataclass(frozen=True)
class QrShown:
    """The engine offered a (new) QR code."""


@dataclass(frozen=True)
class PairCodeIssued:
    """A phone pairing code was issued."""


@dataclass(frozen=True)
class Opened:
    """Connected and logged in."""


@dataclass(frozen=True)
class Closed:
    """The connection ended, or a connect attempt failed, for `reason`."""

    reason: DisconnectReason
    detail: str = ""
    not_before: datetime | None = None
    """The earliest next connect WhatsApp allows (a temporary ban's end), when it said."""


Report = Connecting | QrShown | PairCodeIssued | Opened | Closed


def step(
    current: Lifecycle, report: Report, policy: Policy, rng: random.Random, now: datetime
) -> Lifecycle:
    """The state after `report`, which arrived at `now`. Reports that make no sense in a terminal
    state change nothing (a late callback of a closed connection must not revive it)."""
    if current.terminal and not isinstance(report, Connecting):
        return current
    match report:
        case Connecting():
            if current.terminal:
                return Lifecycle(state=SessionState.CONNECTING)
            return replace(current, state=SessionState.CONNECTING, retry_at=None)
        case QrShown():
            if current.qr_refreshes > policy.qr_max_refreshes:
                return _closed(current, Closed(DisconnectReason.QR_EXHAUSTED), policy, rng, now)
            # A QR refresh while a pairing code is out keeps `pairing` (either may complete it)
            # but still counts towards giving up.
            state = (
                SessionState.PAIRING if current.state is SessionState.PAIRING else SessionState.QR
            )
            return replace(current, state=state, qr_refreshes=current.qr_refreshes + 1, reason=None)
        case PairCodeIssued():
            return replace(current, state=SessionState.PAIRING, reason=None)
        case Opened():
            return Lifecycle(state=SessionState.OPEN)
        case Closed():
            return _closed(current, report, policy, rng, now)


def _closed(
    current: Lifecycle, closed: Closed, policy: Policy, rng: random.Random, now: datetime
) -> Lifecycle:
    reason, detail = closed.reason, closed.detail
    if reason.is_expected:
        return Lifecycle(state=SessionState.STOPPED, reason=reason, detail=detail)
    if reason.wipes_session:
        return Lifecycle(state=SessionState.LOGGED_OUT, reason=reason, detail=detail)
    if reason.is_permanent:
        return Lifecycle(
            state=SessionState.FAILED, reason=reason, detail=detail, attempt=current.attempt
        )
    attempt = current.attempt + 1
    if policy.max_attempts and attempt > policy.max_attempts:
        return Lifecycle(
            state=SessionState.FAILED,
            reason=DisconnectReason.RETRIES_EXHAUSTED,
            detail=f"{current.attempt} connect attempts failed; last: {reason.value} {detail}",
            attempt=current.attempt,
        )
    delay = reconnect_delay(attempt, rng, policy.backoff_base, policy.backoff_max)
    retry_at = now + timedelta(seconds=delay)
    not_before = closed.not_before
    if not_before is None and reason.is_penalty:
        # WhatsApp did not say when the penalty ends: at least the whole cap, never less.
        not_before = now + timedelta(seconds=policy.backoff_max)
    if not_before is not None:
        retry_at = max(retry_at, not_before)
    return Lifecycle(
        state=SessionState.CLOSED, reason=reason, detail=detail, attempt=attempt, retry_at=retry_at
    )
