"""How events read at a terminal (`wabus tail`, `wabus dev`): pure formatting, no I/O."""

from __future__ import annotations

import pytest

from schemas.subjects import Topology
from wabus_cli.console import (
    connection_progress,
    events_subject,
    explain,
    format_event,
    render_qr,
    wait_until,
)


@pytest.mark.parametrize(
    ("instance", "event_type", "subject"),
    [
        (None, None, "wa.evt.*.>"),
        ("acme", None, "wa.evt.acme.>"),
        (None, "message.received", "wa.evt.*.message.received"),
        ("acme", "connection.>", "wa.evt.acme.connection.>"),
    ],
)
def test_events_subject(instance: str | None, event_type: str | None, subject: str) -> None:
    assert events_subject(Topology("wa"), instance, event_type) == subject


def envelope(event_type: str, **data: object) -> dict[str, object]:
    return {
        "id": "evt_1",
        "type": event_type,
        "instance": "acme",
        "timestamp": "2026-11-25T12:34:56.789Z",
        "data": data,
    }


def test_a_received_message_reads_as_who_said_what() -> None:
    line = format_event(
        envelope(
            "message.received",
            **{"from": "551199@s.whatsapp.net", "chat": "551199@s.whatsapp.net"},
            text="olá",
            type="text",
            push_name="Ana",
            from_me=False,
        )
    )
    assert line.startswith("12:34:56  acme  message.received")
    assert "Ana → 551199@s.whatsapp.net: 'olá'" in line


def test_media_without_text_shows_its_kind_and_failures_their_code() -> None:
    media = format_event(envelope("message.received", chat="c", type="image", from_me=True))
    assert "[image]" in media
    assert "(from me)" in media
    failed = format_event(envelope("message.failed", to="55", code="not_on_whatsapp", reason="x"))
    assert "code='not_on_whatsapp'" in failed


def test_unknown_types_show_their_data_compactly() -> None:
    assert format_event(envelope("group.joined", group="g1")).endswith('{"group":"g1"}')
    vote = envelope("poll.vote", poll_id="P1", decrypted=True, selected=["A", "C"])
    assert format_event(vote).endswith("in poll P1: A, C")
    taken_back = envelope("poll.vote", poll_id="P1", decrypted=True, selected=[])
    assert format_event(taken_back).endswith("(vote taken back)")
    unknown = envelope("poll.vote", poll_id="P1", decrypted=False, selected=None)
    assert format_event(unknown).endswith("(not decrypted: the poll is unknown)")


def test_qr_is_rendered_for_the_terminal_and_pairing_is_offered() -> None:
    qr = render_qr("2@" + "A" * 100)
    rows = qr.splitlines()
    assert len(rows) > 15
    assert any("█" in row or "▀" in row or "▄" in row for row in rows)
    assert render_qr("2@short") != qr

    text = connection_progress(envelope("connection.qr", qr="2@abc", refresh=1), "default")
    assert text is not None
    assert "Linked devices" in text
    assert "--phone" in text


def test_connection_progress_speaks_for_each_state() -> None:
    opened = connection_progress(envelope("connection.open", jid="55@s.whatsapp.net"), "x")
    assert opened is not None
    assert "wabus send acme" in opened
    closed = connection_progress(
        envelope("connection.close", reason="network", will_reconnect=True), "x"
    )
    assert closed == "… acme: connection closed (network), reconnecting"
    code = connection_progress(envelope("connection.pair_code", code="ABCD-1234", phone="55"), "x")
    assert code is not None
    assert "ABCD-1234" in code
    assert connection_progress(envelope("message.received"), "x") is None


def test_errors_are_explained_in_one_line_without_repeats() -> None:
    group = ExceptionGroup(
        "tasks", [RuntimeError("no engine"), ExceptionGroup("inner", [RuntimeError("no engine")])]
    )
    assert explain(group) == "no engine"
    assert explain(ValueError()) == "ValueError"


async def test_a_long_wait_says_what_it_waits_for() -> None:
    lines: list[str] = []
    calls = 0

    async def slow() -> bool:
        nonlocal calls
        calls += 1
        return calls > 8

    await wait_until(slow, "the relay", lines.append, every=0.02, report=0.05)
    assert lines
    assert all(line.startswith("… still waiting for the relay (") for line in lines)
