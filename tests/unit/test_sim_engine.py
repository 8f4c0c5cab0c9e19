from __future__ import annotations

import asyncio
import base64
import json
import re
from datetime import datetime
from pathlib import Path

import pytest

from connector.engine import Account, ConnectError, SendError
from connector.engines.sim import SimControlError, SimEngine, SimSession
from connector.reasons import DisconnectReason
from schemas.commands import SendText
from schemas.envelope import EventData
from schemas.events import MessageReceived


class Listener:
    """Records every report of a session, in order."""

    def __init__(self) -> None:
        self.reports: list[tuple[str, object]] = []
        self.events: list[tuple[EventData, str | None]] = []
        self.media: list[bytes] = []

    async def on_qr(self, code: str, expires_at: datetime) -> None:
        self.reports.append(("qr", code))

    async def on_pair_code(self, code: str, phone: str) -> None:
        self.reports.append(("pair_code", (code, phone)))

    async def on_open(self, account: Account) -> None:
        self.reports.append(("open", account))

    async def on_close(
        self, reason: DisconnectReason, detail: str, *, not_before: datetime | None = None
    ) -> None:
        self.reports.append(("close", reason))

    async def on_event(
        self, data: EventData, source_id: str | None = None, media: bytes | None = None
    ) -> None:
        self.reports.append(("event", data))
        self.events.append((data, source_id))
        if media is not None:
            self.media.append(media)

    def messages(self) -> list[tuple[MessageReceived, str | None]]:
        return [(data, source) for data, source in self.events if isinstance(data, MessageReceived)]


async def open_session(instance: str = "acme") -> tuple[SimEngine, SimSession, Listener]:
    engine = SimEngine()
    listener = Listener()
    session = engine.open_session(instance, listener)
    await session.connect()
    return engine, session, listener


async def test_connect_opens_and_a_send_is_recorded_with_a_whatsapp_like_id() -> None:
    _, session, listener = await open_session()
    assert listener.reports[0][0] == "open"
    sent = await session.send(SendText(to="5511999999999", text="hi"))
    assert re.fullmatch(r"3EB0[0-9A-F]{18}", sent.message_id)
    assert sent.chat == "5511999999999@s.whatsapp.net"
    assert session.sent == [(sent.message_id, SendText(to="5511999999999", text="hi"))]


async def test_inbound_repeat_emits_numbered_messages_in_order() -> None:
    engine, _, listener = await open_session()
    payload = {"from": "5511999999999", "text": "hello", "repeat": 3, "id": "ABC"}
    await engine.control("acme", "inbound", json.dumps(payload).encode())
    while len(listener.messages()) < 3:
        await asyncio.sleep(0.01)
    messages = listener.messages()
    assert [m.text for m, _ in messages] == ["hello #1", "hello #2", "hello #3"]
    assert [m.message_id for m, _ in messages] == ["ABC0000001", "ABC0000002", "ABC0000003"]
    assert [source for _, source in messages] == [m.message_id for m, _ in messages]
    assert messages[0][0].chat == messages[0][0].from_ == "5511999999999@s.whatsapp.net"
    await engine.close()


async def test_fail_next_sends_then_recover() -> None:
    engine, session, _ = await open_session()
    await engine.control(
        "acme", "fail_next_sends", b'{"count": 2, "code": "rate_limited", "retryable": true}'
    )
    message = SendText(to="5511999999999", text="hi")
    for _ in range(2):
        with pytest.raises(SendError) as raised:
            await session.send(message)
        assert (raised.value.code, raised.value.retryable) == ("rate_limited", True)
    assert (await session.send(message)).message_id


@pytest.mark.parametrize(
    ("instance", "action", "payload"),
    [
        ("acme", "inbound", b"{}"),
        ("acme", "inbound", b"not json"),
        ("acme", "explode", b"{}"),
        ("nobody", "inbound", b'{"from": "5511999999999", "text": "x"}'),
    ],
)
async def test_bad_controls_are_refused(instance: str, action: str, payload: bytes) -> None:
    engine, _, _ = await open_session()
    with pytest.raises(SimControlError):
        await engine.control(instance, action, payload)


async def test_recorded_sends_can_be_queried() -> None:
    engine, session, _ = await open_session()
    sent = await session.send(SendText(to="5511999999999", text="hi"))
    answer = await engine.control("acme", "sent", b"")
    data: dict[str, object] = {
        "type": "text", "to": "5511999999999", "text": "hi", "reply_to": None, "mentions": [],
    }  # fmt: skip
    assert answer == {"ok": True, "sent": [{"message_id": sent.message_id, "data": data}]}


async def test_pairing_logout_and_disconnect_are_reported() -> None:
    _, session, listener = await open_session()
    code = await session.pair_phone("5511999999999")
    await session.logout()
    await session.disconnect()
    assert listener.reports[1:] == [
        ("pair_code", (code, "5511999999999")),
        ("close", DisconnectReason.LOGGED_OUT),
        ("close", DisconnectReason.STOPPED),
    ]


def test_reason_predicates() -> None:
    assert DisconnectReason.LOGGED_OUT.is_permanent
    assert DisconnectReason.LOGGED_OUT.wipes_session
    assert not DisconnectReason.NETWORK.is_permanent
    assert DisconnectReason.STOPPED.is_expected
    assert not DisconnectReason.STREAM_REPLACED.wipes_session


async def test_unpaired_device_shows_qr_codes_until_scanned() -> None:
    engine = SimEngine(pairing="qr", qr_interval=0.01)
    listener = Listener()
    session = engine.open_session("acme", listener)
    await session.connect()
    while len([r for r in listener.reports if r[0] == "qr"]) < 3:
        await asyncio.sleep(0.005)
    codes = [code for kind, code in listener.reports if kind == "qr"]
    assert len(set(codes)) == len(codes)  # every refresh is a new code
    assert all(isinstance(code, str) and code.startswith("2@") for code in codes)
    await engine.control("acme", "scan", b"")
    assert listener.reports[-1][0] == "open"
    shown = len(listener.reports)
    await asyncio.sleep(0.05)
    assert len(listener.reports) == shown  # no QR after pairing
    await engine.close()


async def test_drop_logout_and_failing_connects() -> None:
    engine, _, listener = await open_session()
    await engine.control("acme", "drop", b"")
    assert listener.reports[-1] == ("close", DisconnectReason.NETWORK)
    await engine.control("acme", "fail_connect", b'{"count": 2}')
    for _ in range(2):
        with pytest.raises(ConnectError) as raised:
            await engine.open_session("acme", listener).connect()
        assert raised.value.reason is DisconnectReason.NETWORK
    again = engine.open_session("acme", listener)
    await again.connect()
    assert listener.reports[-1][0] in {"open"}
    await engine.control("acme", "logout", b"")
    assert listener.reports[-1] == ("close", DisconnectReason.LOGGED_OUT)
    after_logout = Listener()
    await engine.open_session("acme", after_logout).connect()
    assert after_logout.reports == []  # unpaired now: waits for a QR scan, not open
    await engine.close()


async def test_inbound_media_bytes_reach_the_listener() -> None:
    engine, _, listener = await open_session()
    payload = {
        "from": "5511999999999", "type": "image", "media": {"mimetype": "image/png"},
        "media_base64": base64.b64encode(b"\x89PNG fake").decode(),
    }  # fmt: skip
    await engine.control("acme", "inbound", json.dumps(payload).encode())
    while not listener.media:
        await asyncio.sleep(0.005)
    assert listener.media == [b"\x89PNG fake"]
    with pytest.raises(SimControlError):
        await engine.control("acme", "inbound", b'{"from": "5511999999999", "media_base64": "!"}')


async def test_send_log_outlives_the_engine_when_kept_on_disk(tmp_path: Path) -> None:
    engine = SimEngine(data_dir=tmp_path)
    session = engine.open_session("acme", Listener())
    await session.connect()
    sent = await session.send(SendText(to="5511999999999", text="kept"))
    restarted = SimEngine(data_dir=tmp_path)
    restarted.open_session("acme", Listener())
    answer = await restarted.control("acme", "sent", b"")
    assert [entry["message_id"] for entry in answer["sent"]] == [sent.message_id]
