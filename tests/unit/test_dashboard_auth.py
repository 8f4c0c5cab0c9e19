"""The dashboard's credentials as plain data: sessions, CSRF tokens, the one-time link and the
bound on failed logins (no HTTP, no clock: `now` is passed in)."""

from __future__ import annotations

import json

from pydantic import SecretStr

from relay.ui.auth import MAX_FAILURES, Gate, Throttle
from relay.ui.events import Follower, subject_of
from wabus.settings import Settings

NOW = 1_800_000_000.0


def gate(**changes: object) -> Gate:
    return Gate(Settings(**changes))  # type: ignore[arg-type]


def test_off_without_a_password_or_a_link() -> None:
    assert not gate().enabled
    assert gate(dashboard_password=SecretStr("pw-123456")).enabled
    assert gate(dashboard_login_token=SecretStr("tok")).enabled


def test_the_password_is_checked_and_a_session_verifies_until_it_expires() -> None:
    door = gate(dashboard_password=SecretStr("right-password"))
    assert door.password_matches("right-password")
    assert not door.password_matches("right-passwor")
    assert not door.password_matches("")
    cookie = door.issue(NOW)
    session = door.verify(cookie, NOW + 60)
    assert session is not None
    assert door.verify(cookie, NOW + door.lifetime + 1) is None
    nonce, expires, signature = cookie.split(".")
    assert door.verify(f"{nonce}.{int(expires) + 9999}.{signature}", NOW) is None  # altered
    assert door.verify("garbage", NOW) is None
    assert door.verify(None, NOW) is None


def test_the_same_password_signs_alike_in_every_worker_and_another_does_not() -> None:
    cookie = gate(dashboard_password=SecretStr("right-password")).issue(NOW)
    assert gate(dashboard_password=SecretStr("right-password")).verify(cookie, NOW) is not None
    assert gate(dashboard_password=SecretStr("other-password")).verify(cookie, NOW) is None


def test_logout_revokes_the_session() -> None:
    door = gate(dashboard_password=SecretStr("right-password"))
    cookie = door.issue(NOW)
    session = door.verify(cookie, NOW)
    assert session is not None
    door.revoke(session)
    assert door.verify(cookie, NOW) is None


def test_csrf_tokens_are_bound_to_their_session() -> None:
    door = gate(dashboard_password=SecretStr("right-password"))
    one, two = door.verify(door.issue(NOW), NOW), door.verify(door.issue(NOW), NOW)
    assert one is not None
    assert two is not None
    assert door.csrf_ok(one, door.csrf_token(one))
    assert not door.csrf_ok(one, door.csrf_token(two))
    assert not door.csrf_ok(one, None)
    assert not door.csrf_ok(one, "")


def test_the_login_forms_token_expires() -> None:
    door = gate(dashboard_password=SecretStr("right-password"))
    token = door.login_form_token(NOW)
    assert door.login_form_ok(token, NOW + 10)
    assert not door.login_form_ok(token, NOW + 7200)
    assert not door.login_form_ok("1.2", NOW)


def test_the_one_time_link_works_once() -> None:
    door = gate(dashboard_login_token=SecretStr("one-time-token"))
    assert not door.redeem("wrong-token")
    assert door.redeem("one-time-token")
    assert not door.redeem("one-time-token")


def test_failed_logins_are_bounded_per_client_for_a_window() -> None:
    throttle = Throttle()
    for _ in range(MAX_FAILURES - 1):
        throttle.failed("10.0.0.1", NOW)
    assert throttle.retry_after("10.0.0.1", NOW) == 0  # the control: under the bound
    throttle.failed("10.0.0.1", NOW)
    assert throttle.retry_after("10.0.0.1", NOW + 1) > 0
    assert throttle.retry_after("10.0.0.2", NOW + 1) == 0  # another client is not affected
    assert throttle.retry_after("10.0.0.1", NOW + throttle.window + 1) == 0
    for _ in range(MAX_FAILURES - 1):
        throttle.failed("10.0.0.3", NOW)
    throttle.succeeded("10.0.0.3")  # a success forgets the failures before it
    throttle.failed("10.0.0.3", NOW)
    assert throttle.retry_after("10.0.0.3", NOW) == 0


def test_live_event_subjects() -> None:
    assert subject_of("wa", "", "") == "wa.evt.*.>"
    assert subject_of("wa", "acme", "") == "wa.evt.acme.>"
    assert subject_of("wa", "", "message.received") == "wa.evt.*.message.received"


async def test_a_slow_browser_loses_events_counted_never_buffered_without_bound() -> None:
    follower = Follower(limit=3)
    for number in range(10):
        follower.deliver(json.dumps({"n": number}).encode())
    assert follower.queue.qsize() == 3
    assert follower.dropped == 7
    chunks = follower.stream(lifetime=5, heartbeat=0.05)
    seen = [await anext(chunks) for _ in range(5)]
    await chunks.aclose()
    assert seen[1] == b"event: ready\ndata: {}\n\n"
    assert seen[2] == b'event: dropped\ndata: {"dropped": 7}\n\n'
    assert seen[3] == b'event: envelope\ndata: {"n": 0}\n\n'
    assert seen[4] == b'event: envelope\ndata: {"n": 1}\n\n'
