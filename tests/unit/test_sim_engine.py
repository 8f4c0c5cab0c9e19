from __future__ import annotations

import asyncio
import json
import re

import pytest

from connector.engine import SendError
from connector.engines.sim import SimControlError, SimEngine
from schemas.commands import SendText
from schemas.envelope import EventData
from schemas.events import ConnectionOpen, MessageReceived


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, EventData, str | None]] = []

    async def __call__(self, instance: str, data: EventData, source_id: str | None = None) -> None:
        self.events.append((instance, data, source_id))


async def test_a_send_is_recorded_and_answered_with_a_whatsapp_like_id() -> None:
    recorder = Recorder()
    engine = SimEngine(recorder)
    sent = await engine.send("acme", SendText(to="5511999999999", text="hi"))
    assert re.fullmatch(r"3EB0[0-9A-F]{18}", sent.message_id)
    assert sent.chat == "5511999999999@s.whatsapp.net"
    assert engine.sessions["acme"].sent == [
        (sent.message_id, SendText(to="5511999999999", text="hi"))
    ]
    assert isinstance(recorder.events[0][1], ConnectionOpen)


async def test_inbound_repeat_emits_numbered_messages_in_order() -> None:
    recorder = Recorder()
    engine = SimEngine(recorder)
    payload = {"from": "5511999999999", "text": "hello", "repeat": 3, "id": "ABC"}
    await engine.control("acme", "inbound", json.dumps(payload).encode())
    while len(recorder.events) < 4:
        await asyncio.sleep(0.01)
    messages = [data for _, data, _ in recorder.events if isinstance(data, MessageReceived)]
    assert [m.text for m in messages] == ["hello #1", "hello #2", "hello #3"]
    assert [m.message_id for m in messages] == ["ABC0000001", "ABC0000002", "ABC0000003"]
    assert [source for _, data, source in recorder.events if isinstance(data, MessageReceived)] == [
        m.message_id for m in messages
    ]
    assert messages[0].chat == messages[0].from_ == "5511999999999@s.whatsapp.net"
    await engine.close()


async def test_fail_next_sends_then_recover() -> None:
    engine = SimEngine(Recorder())
    await engine.control(
        "acme", "fail_next_sends", b'{"count": 2, "code": "rate_limited", "retryable": true}'
    )
    message = SendText(to="5511999999999", text="hi")
    for _ in range(2):
        with pytest.raises(SendError) as raised:
            await engine.send("acme", message)
        assert (raised.value.code, raised.value.retryable) == ("rate_limited", True)
    assert (await engine.send("acme", message)).message_id


@pytest.mark.parametrize(
    ("action", "payload"), [("inbound", b"{}"), ("inbound", b"not json"), ("explode", b"{}")]
)
async def test_bad_controls_are_refused(action: str, payload: bytes) -> None:
    with pytest.raises(SimControlError):
        await SimEngine(Recorder()).control("acme", action, payload)


async def test_recorded_sends_can_be_queried() -> None:
    engine = SimEngine(Recorder())
    sent = await engine.send("acme", SendText(to="5511999999999", text="hi"))
    answer = await engine.control("acme", "sent", b"")
    assert answer == {
        "ok": True,
        "sent": [
            {
                "message_id": sent.message_id,
                "data": {
                    "type": "text", "to": "5511999999999", "text": "hi",
                    "reply_to": None, "mentions": [],
                },
            }
        ],
    }  # fmt: skip
