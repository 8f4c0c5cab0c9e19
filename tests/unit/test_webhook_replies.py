from __future__ import annotations

import json
from typing import Any

import pytest

from relay.webhooks.replies import reply_to_event
from schemas.commands import SendImage, SendText

CHAT = "5511999999999@s.whatsapp.net"


def event(**data: Any) -> dict[str, Any]:
    return {
        "id": "evt_1",
        "type": "message.received",
        "instance": "acme",
        "data": {"chat": CHAT, "from_me": False, **data},
    }


@pytest.mark.parametrize(
    "answer",
    [{"reply": {"text": "pong"}}, {"response": "pong"}],
)
def test_both_reply_shapes_become_a_text_send_to_the_same_chat(answer: dict[str, Any]) -> None:
    assert reply_to_event(event(), json.dumps(answer).encode()) == SendText(to=CHAT, text="pong")


def test_a_reply_may_be_any_send_kind() -> None:
    answer = {"reply": {"type": "image", "url": "https://example.com/a.png", "caption": "look"}}
    reply = reply_to_event(event(), json.dumps(answer).encode())
    assert isinstance(reply, SendImage)
    assert reply.to == CHAT


@pytest.mark.parametrize(
    ("given", "body"),
    [
        (event(), b""),
        (event(), b"OK"),
        (event(), b"[1]"),
        (event(), b'{"ok": true}'),
        (event(), b'{"reply": {"text": ""}}'),
        (event(from_me=True), b'{"response": "loop"}'),
        ({**event(), "type": "message.sent"}, b'{"response": "pong"}'),
    ],
)
def test_no_reply(given: dict[str, Any], body: bytes) -> None:
    assert reply_to_event(given, body) is None
