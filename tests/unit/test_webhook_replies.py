from __future__ import annotations

import json
from typing import Any

import pytest

from relay.webhooks.replies import RefusedReply, reply_to_event
from schemas.commands import SendImage, SendText

CHAT = "5511999999999@s.whatsapp.net"


def event(**data: Any) -> dict[str, Any]:
    return {"chat": CHAT, "from_me": False, **data}


RECEIVED = "message.received"


@pytest.mark.parametrize(
    "answer",
    [{"reply": {"text": "pong"}}, {"response": "pong"}],
)
def test_both_reply_shapes_become_a_text_send_to_the_same_chat(answer: dict[str, Any]) -> None:
    reply = reply_to_event(RECEIVED, event(), json.dumps(answer).encode())
    assert reply == SendText(to=CHAT, text="pong")


def test_a_reply_may_be_any_send_kind() -> None:
    answer = {"reply": {"type": "image", "url": "https://example.com/a.png", "caption": "look"}}
    reply = reply_to_event(RECEIVED, event(), json.dumps(answer).encode())
    assert isinstance(reply, SendImage)
    assert reply.to == CHAT


@pytest.mark.parametrize(
    ("event_type", "given", "body"),
    [
        (RECEIVED, event(), b""),
        (RECEIVED, event(), b"OK"),
        (RECEIVED, event(), b"[1]"),
        (RECEIVED, event(), b'{"ok": true}'),
        (RECEIVED, event(from_me=True), b'{"response": "loop"}'),
        ("message.sent", event(), b'{"response": "pong"}'),
    ],
)
def test_no_reply(event_type: str, given: dict[str, Any], body: bytes) -> None:
    assert reply_to_event(event_type, given, body) is None


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (b'{"reply": {"text": ""}}', "text"),
        (b'{"reply": {"type": "image"}}', "`url` or `base64`"),
        (b'{"reply": {"type": "telepathy", "text": "hi"}}', "type"),
    ],
)
def test_a_reply_that_is_not_a_valid_send_is_refused_with_the_reason(
    body: bytes, where: str
) -> None:
    with pytest.raises(RefusedReply, match="not a valid send") as refused:
        reply_to_event(RECEIVED, event(), body)
    assert where in str(refused.value)
