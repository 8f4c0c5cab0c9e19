"""Reading an event off the events stream, from a table: what is an event, and why the rest is
poison."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from relay.delivery.events import UNKNOWN, EventRef, Poison, read_event
from schemas.envelope import encode, make_event
from schemas.events import MessageReceived, PresenceChat

CHAT = "5511999999999@s.whatsapp.net"
MESSAGE = make_event(
    "acme",
    MessageReceived.model_validate(
        {
            "message_id": "M1",
            "chat": CHAT,
            "from": CHAT,
            "from_me": False,
            "type": "text",
            "text": "hi",
            "timestamp": datetime.now(UTC),
        }
    ),
)
PRESENCE = make_event(
    "acme", PresenceChat.model_validate({"chat": CHAT, "from": CHAT, "state": "composing"})
)


def envelope_with(**changes: object) -> bytes:
    return json.dumps({**json.loads(encode(MESSAGE)), **changes}).encode()


def test_an_event_is_read_with_its_lane() -> None:
    event = read_event("wa.evt.acme.message.received", encode(MESSAGE), 7)
    assert isinstance(event, EventRef)
    assert (event.event_id, event.seq, event.instance, event.event_type) == (
        MESSAGE.id,
        7,
        "acme",
        "message.received",
    )
    assert event.body == encode(MESSAGE)  # what is signed and sent: the bytes as published
    assert event.lane == ("acme", CHAT)


def test_an_event_without_a_chat_shares_its_instances_lane() -> None:
    body = envelope_with(type="connection.open", data={})
    event = read_event("wa.evt.acme.connection.open", body, 1)
    assert isinstance(event, EventRef)
    assert event.lane == ("acme", None)


RECEIVED = "wa.evt.acme.message.received"
POISON = [
    (RECEIVED, b"\x00not json", "not an envelope: body: Invalid JSON", "acme"),
    (RECEIVED, b"[1, 2]", "not an envelope", "acme"),
    (RECEIVED, b'{"hello": "world"}', "not an envelope: id: Field required", "acme"),
    (RECEIVED, envelope_with(instance="Not An Id"), "not an envelope: instance", "acme"),
    (RECEIVED, envelope_with(id=""), "not an envelope: id", "acme"),
    (RECEIVED, envelope_with(timestamp="yesterday"), "not an envelope: timestamp", "acme"),
    (
        "wa.evt.other.message.received",
        encode(MESSAGE),
        "envelope of 'acme' / 'message.received' on the subject of 'other'",
        "other",
    ),
    ("wa.evt.acme.presence.chat", encode(MESSAGE), "on the subject of 'acme' / 'presence", "acme"),
    (RECEIVED, envelope_with(id="evt 1"), "header-safe", "acme"),
    (RECEIVED, envelope_with(id="evt\r\nX: 1"), "header-safe", "acme"),
    (RECEIVED, envelope_with(id="évt"), "header-safe", "acme"),
    ("wa.evt.acme", encode(MESSAGE), "not an event subject", UNKNOWN),
    ("wa.cmd.acme.send", encode(MESSAGE), "not an event subject", UNKNOWN),
]


@pytest.mark.parametrize(("subject", "body", "reason", "instance"), POISON)
def test_poison_says_why(subject: str, body: bytes, reason: str, instance: str) -> None:
    poison = read_event(subject, body, 3)
    assert isinstance(poison, Poison), poison
    assert reason in poison.reason
    assert (poison.body, poison.seq, poison.instance) == (body, 3, instance)


def test_the_same_envelope_on_its_own_subject_is_an_event() -> None:
    """The positive control of the table: each poison above is one change away from this."""
    for envelope, subject in ((MESSAGE, "message.received"), (PRESENCE, "presence.chat")):
        assert isinstance(read_event(f"wa.evt.acme.{subject}", encode(envelope), 1), EventRef)
