"""The session lifecycle, table-driven, no I/O."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from connector.lifecycle import (
    Closed,
    Connecting,
    Lifecycle,
    Opened,
    PairCodeIssued,
    Policy,
    QrShown,
    Report,
    reconnect_delay,
    step,
)
from connector.reasons import DisconnectReason as R
from schemas.instances import SessionState as S

POLICY = Policy(qr_max_refreshes=2, backoff_base=1.0, backoff_max=8.0)
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def run(
    reports: list[Report], policy: Policy = POLICY, start: Lifecycle | None = None
) -> Lifecycle:
    rng = random.Random(7)
    state = start or Lifecycle()
    for report in reports:
        state = step(state, report, policy, rng, NOW)
    return state


@pytest.mark.parametrize(
    ("reports", "state", "reason", "attempt"),
    [
        ([Connecting()], S.CONNECTING, None, 0),
        ([Connecting(), QrShown()], S.QR, None, 0),
        ([Connecting(), QrShown(), PairCodeIssued()], S.PAIRING, None, 0),
        ([Connecting(), QrShown(), PairCodeIssued(), QrShown()], S.PAIRING, None, 0),
        (
            [Connecting(), QrShown(), PairCodeIssued(), QrShown(), QrShown(), QrShown()],
            S.FAILED,
            R.QR_EXHAUSTED,
            0,
        ),
        ([Connecting(), QrShown(), Opened()], S.OPEN, None, 0),
        ([Connecting(), Opened(), Closed(R.NETWORK)], S.CLOSED, R.NETWORK, 1),
        (
            [Connecting(), Closed(R.NETWORK), Connecting(), Closed(R.UNKNOWN)],
            S.CLOSED,
            R.UNKNOWN,
            2,
        ),
        ([Connecting(), Closed(R.NETWORK), Connecting(), Opened()], S.OPEN, None, 0),
        ([Connecting(), Opened(), Closed(R.LOGGED_OUT)], S.LOGGED_OUT, R.LOGGED_OUT, 0),
        ([Connecting(), Opened(), Closed(R.STREAM_REPLACED)], S.FAILED, R.STREAM_REPLACED, 0),
        ([Connecting(), Opened(), Closed(R.CLIENT_OUTDATED)], S.FAILED, R.CLIENT_OUTDATED, 0),
        ([Connecting(), Opened(), Closed(R.STOPPED)], S.STOPPED, R.STOPPED, 0),
        ([Connecting(), Closed(R.TEMPORARY_BAN)], S.CLOSED, R.TEMPORARY_BAN, 1),
        # QR: the first code and two refreshes are shown, the third refresh gives up
        ([Connecting(), QrShown(), QrShown(), QrShown()], S.QR, None, 0),
        ([Connecting(), QrShown(), QrShown(), QrShown(), QrShown()], S.FAILED, R.QR_EXHAUSTED, 0),
        # a late report of a dead connection does not revive a terminal state
        ([Connecting(), Closed(R.LOGGED_OUT), Opened()], S.LOGGED_OUT, R.LOGGED_OUT, 0),
        ([Connecting(), Closed(R.STOPPED), QrShown()], S.STOPPED, R.STOPPED, 0),
        # …but a new connect (config changed, pairing asked for) starts afresh
        ([Connecting(), Closed(R.LOGGED_OUT), Connecting()], S.CONNECTING, None, 0),
    ],
)
def test_transitions(reports: list[Report], state: S, reason: R | None, attempt: int) -> None:
    result = run(reports)
    assert (result.state, result.reason, result.attempt) == (state, reason, attempt)
    assert result.will_reconnect == (state is S.CLOSED)
    assert (result.retry_at is not None) == (state is S.CLOSED)


def test_qr_refreshes_count_and_reset_on_open() -> None:
    assert run([Connecting(), QrShown(), QrShown()]).qr_refreshes == 2
    assert run([Connecting(), QrShown(), Opened()]).qr_refreshes == 0


def test_reconnect_gives_up_after_max_attempts_when_configured() -> None:
    policy = Policy(max_attempts=2)
    two: list[Report] = [Connecting(), Closed(R.NETWORK)] * 2
    assert run(two, policy).state is S.CLOSED
    failed = run([*two, Connecting(), Closed(R.NETWORK)], policy)
    assert (failed.state, failed.reason, failed.attempt) == (S.FAILED, R.RETRIES_EXHAUSTED, 2)
    forever: list[Report] = [Connecting(), Closed(R.NETWORK)] * 50
    assert run(forever).state is S.CLOSED  # 0: forever


IN_AN_HOUR = NOW + timedelta(hours=1)
AN_HOUR_AGO = NOW - timedelta(hours=1)
CAP = timedelta(seconds=POLICY.backoff_max)


@pytest.mark.parametrize(
    ("closed", "earliest", "latest"),
    [
        # a ban whose end WhatsApp named: not a moment before it, and not needlessly later
        (Closed(R.TEMPORARY_BAN, "ban", not_before=IN_AN_HOUR), IN_AN_HOUR, IN_AN_HOUR),
        # a ban without a named end: the whole backoff cap
        (Closed(R.TEMPORARY_BAN, "ban"), NOW + CAP, NOW + CAP),
        # a ban that has already ended by the time it is reported: ordinary backoff (attempt 1)
        (Closed(R.TEMPORARY_BAN, "ban", not_before=AN_HOUR_AGO), NOW, NOW + CAP),
        # any transient close that names an earliest retry is held to it
        (Closed(R.NETWORK, "drop", not_before=IN_AN_HOUR), IN_AN_HOUR, IN_AN_HOUR),
        # positive control: without one, the ordinary backoff of attempt 1 (0.5-1 s)
        (Closed(R.NETWORK, "drop"), NOW + timedelta(seconds=0.5), NOW + timedelta(seconds=1)),
    ],
)
def test_a_close_with_an_earliest_retry_is_never_retried_before_it(
    closed: Closed, earliest: datetime, latest: datetime
) -> None:
    result = run([Connecting(), Opened(), closed])
    assert (result.state, result.reason, result.detail) == (S.CLOSED, closed.reason, closed.detail)
    assert result.retry_at is not None
    assert earliest <= result.retry_at <= latest


@pytest.mark.parametrize("reason", [R.LOGGED_OUT, R.STREAM_REPLACED, R.STOPPED])
def test_an_earliest_retry_does_not_make_a_final_close_reconnect(reason: R) -> None:
    result = run([Connecting(), Opened(), Closed(reason, not_before=IN_AN_HOUR)])
    assert result.terminal
    assert result.retry_at is None


def test_only_a_penalty_waits_for_the_cap_when_its_end_is_unknown() -> None:
    for reason in R:
        result = run([Connecting(), Opened(), Closed(reason)])
        if result.retry_at is not None:
            assert (result.retry_at >= NOW + CAP) == reason.is_penalty, reason


@pytest.mark.parametrize(
    ("attempt", "low", "high"),
    [(1, 0.5, 1.0), (2, 1.0, 2.0), (3, 2.0, 4.0), (4, 4.0, 8.0), (5, 5.0, 10.0), (50, 5.0, 10.0)],
)
def test_reconnect_delay_is_capped_exponential_with_jitter(
    attempt: int, low: float, high: float
) -> None:
    rng = random.Random(1)
    delays = [reconnect_delay(attempt, rng, base=1.0, cap=10.0) for _ in range(200)]
    assert all(low <= d <= high for d in delays)
    assert max(delays) - min(delays) > (high - low) / 2  # jittered, not constant


def test_every_permanent_reason_ends_the_session() -> None:
    for reason in R:
        result = run([Connecting(), Opened(), Closed(reason)])
        assert result.terminal == (reason.is_permanent or reason.is_expected)
