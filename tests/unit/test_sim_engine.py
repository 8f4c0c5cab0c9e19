from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from connector.engine import (
    Account,
    ConnectError,
    EncryptedVote,
    PreparedMedia,
    SendContext,
    SendError,
)
from connector.engines.sim import SIM_JID, SimControlError, SimEngine, SimSession
from connector.link_preview import LinkPreview
from connector.polls import VoteNotDecrypted, decrypt_vote, option_hash
from connector.reasons import DisconnectReason
from connector.seen import SeenMessage
from schemas.commands import SendPoll, SendReaction, SendText
from schemas.envelope import EventData
from schemas.events import MessageKind, MessageReceived

NO_CONTEXT = SendContext()


class Listener:
    """Records every report of a session, in order."""

    def __init__(self) -> None:
        self.reports: list[tuple[str, object]] = []
        self.events: list[tuple[EventData, str | None]] = []
        self.media: list[bytes] = []
        self.kept: dict[str, tuple[bytes | None, bytes | None]] = {}
        """Source id → (raw, poll secret) handed over with an event, to be remembered."""
        self.votes: list[EncryptedVote] = []

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
        self,
        data: EventData,
        source_id: str | None = None,
        media: bytes | None = None,
        raw: bytes | None = None,
        poll_secret: bytes | None = None,
    ) -> None:
        self.reports.append(("event", data))
        self.events.append((data, source_id))
        if media is not None:
            self.media.append(media)
        if source_id is not None:
            self.kept[source_id] = (raw, poll_secret)

    async def on_poll_vote(self, vote: EncryptedVote) -> None:
        self.reports.append(("vote", vote))
        self.votes.append(vote)

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
    sent = await session.send(SendText(to="5511999999999", text="hi"), NO_CONTEXT)
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
            await session.send(message, NO_CONTEXT)
        assert (raised.value.code, raised.value.retryable) == ("rate_limited", True)
    assert (await session.send(message, NO_CONTEXT)).message_id


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
    sent = await session.send(SendText(to="5511999999999", text="hi"), NO_CONTEXT)
    answer = await engine.control("acme", "sent", b"")
    data: dict[str, object] = {
        "type": "text", "to": "5511999999999", "text": "hi", "reply_to": None, "quoted": None,
        "mentions": [], "mention_all": False, "link_preview": False,
    }  # fmt: skip
    entry = {"message_id": sent.message_id, "data": data, "context": {}}
    assert answer == {"ok": True, "sent": [entry]}


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
    sent = await session.send(SendText(to="5511999999999", text="kept"), NO_CONTEXT)
    restarted = SimEngine(data_dir=tmp_path)
    restarted.open_session("acme", Listener())
    answer = await restarted.control("acme", "sent", b"")
    assert [entry["message_id"] for entry in answer["sent"]] == [sent.message_id]


async def until(done: Callable[[], bool]) -> None:
    """Wait for the sim's own task to have reported (bounded, so a failure cannot hang)."""
    async with asyncio.timeout(10):
        while not done():
            await asyncio.sleep(0.005)


async def play_vote(engine: SimEngine, voter: str, poll_id: str, options: list[str]) -> None:
    payload = {
        "from": voter,
        "id": f"3EB0VOTE{len(options)}",
        "vote": {"poll_id": poll_id, "options": options},
    }
    await engine.control("acme", "inbound", json.dumps(payload).encode())


async def test_a_sent_poll_gets_a_secret_its_votes_decrypt_with() -> None:
    engine, session, listener = await open_session()
    poll = SendPoll(
        type="poll",
        to="5511999999999",
        question="Drink?",
        options=["tea", "coffee", "water"],
        selectable_count=2,
    )
    sent = await session.send(poll, NO_CONTEXT)
    assert sent.poll_secret is not None
    assert len(sent.poll_secret) == 32
    assert sent.raw is not None
    text = await session.send(SendText(to="5511999999999", text="hi"), NO_CONTEXT)
    assert text.poll_secret is None  # the control: only polls have one
    await play_vote(engine, "5511999999999", sent.message_id, ["tea", "water"])
    await until(lambda: bool(listener.votes))
    vote = listener.votes[0]
    assert isinstance(vote, EncryptedVote)
    assert (vote.poll_id, vote.message_id) == (sent.message_id, "3EB0VOTE2")
    assert vote.chat == vote.voter == "5511999999999@s.whatsapp.net"
    assert vote.poll_sender == SIM_JID  # our poll: we are its author
    assert listener.events == []  # a vote is not a message
    hashes = decrypt_vote(
        sent.poll_secret, vote.poll_id, vote.poll_sender, vote.voter, vote.enc_payload, vote.enc_iv
    )
    assert hashes == [option_hash("tea"), option_hash("water")]
    with pytest.raises(VoteNotDecrypted):  # sealed with this poll's secret, no other
        decrypt_vote(
            b"\x00" * 32, vote.poll_id, vote.poll_sender, vote.voter, vote.enc_payload, vote.enc_iv
        )
    await engine.close()


async def test_a_vote_taken_back_selects_nothing() -> None:
    engine, session, listener = await open_session()
    poll = SendPoll(type="poll", to="5511999999999", question="Q?", options=["a", "b"])
    sent = await session.send(poll, NO_CONTEXT)
    assert sent.poll_secret is not None
    await play_vote(engine, "5511999999999", sent.message_id, [])
    await until(lambda: bool(listener.votes))
    vote = listener.votes[0]
    opened = decrypt_vote(
        sent.poll_secret, vote.poll_id, vote.poll_sender, vote.voter, vote.enc_payload, vote.enc_iv
    )
    assert opened == []
    await engine.close()


async def test_a_vote_in_a_poll_the_sim_never_saw_does_not_decrypt() -> None:
    engine, session, listener = await open_session()
    sent = await session.send(
        SendPoll(type="poll", to="5511999999999", question="Q?", options=["a", "b"]), NO_CONTEXT
    )
    assert sent.poll_secret is not None
    await play_vote(engine, "5511999999999", "3EB0NOTAPOLL", ["a"])
    await play_vote(engine, "5511999999999", sent.message_id, ["a", "b"])  # the control
    await until(lambda: len(listener.votes) == 2)
    unknown, known = sorted(listener.votes, key=lambda vote: vote.poll_id != "3EB0NOTAPOLL")
    assert unknown.poll_id == "3EB0NOTAPOLL"
    with pytest.raises(VoteNotDecrypted):
        decrypt_vote(
            sent.poll_secret,
            unknown.poll_id,
            unknown.poll_sender,
            unknown.voter,
            unknown.enc_payload,
            unknown.enc_iv,
        )
    opened = decrypt_vote(
        sent.poll_secret,
        known.poll_id,
        known.poll_sender,
        known.voter,
        known.enc_payload,
        known.enc_iv,
    )
    assert opened == [option_hash("a"), option_hash("b")]
    await engine.close()


async def test_an_inbound_poll_hands_over_its_secret_and_its_votes_open_with_it() -> None:
    engine, _, listener = await open_session()
    author = "5511888888888"
    group = "120363000000000001@g.us"
    question = {"question": "Lunch?", "options": ["soup", "salad"], "selectable_count": 1}
    poll = {"from": author, "id": "3EB0THEIRPOLL", "chat": group, "type": "poll", "poll": question}
    await engine.control("acme", "inbound", json.dumps(poll).encode())
    await until(lambda: bool(listener.messages()))
    message, source = listener.messages()[0]
    assert (message.type, source) == (MessageKind.POLL, "3EB0THEIRPOLL")
    raw, secret = listener.kept["3EB0THEIRPOLL"]
    assert secret is not None
    assert len(secret) == 32
    assert raw is not None
    copy = MessageReceived.model_validate_json(raw)  # the sim's own copy (times in ms)
    assert copy.model_dump(exclude={"timestamp"}) == message.model_dump(exclude={"timestamp"})
    voter = {
        "from": "5511999999999",
        "chat": group,
        "vote": {"poll_id": "3EB0THEIRPOLL", "options": ["salad"]},
    }
    await engine.control("acme", "inbound", json.dumps(voter).encode())
    await until(lambda: bool(listener.votes))
    vote = listener.votes[0]
    assert vote.chat == group
    assert vote.poll_sender == f"{author}@s.whatsapp.net"  # their poll: they are its author
    assert vote.voter == "5511999999999@s.whatsapp.net"
    opened = decrypt_vote(
        secret, vote.poll_id, vote.poll_sender, vote.voter, vote.enc_payload, vote.enc_iv
    )
    assert opened == [option_hash("salad")]
    await engine.close()


async def test_inbound_text_is_handed_over_with_a_copy_and_no_secret() -> None:
    engine, _, listener = await open_session()
    await engine.control(
        "acme", "inbound", b'{"from": "5511999999999", "text": "x", "id": "3EB0T"}'
    )
    await until(lambda: "3EB0T" in listener.kept)
    raw, secret = listener.kept["3EB0T"]
    assert secret is None
    assert raw is not None
    assert MessageReceived.model_validate_json(raw).text == "x"
    await engine.close()


async def test_the_poll_secrets_of_sent_polls_outlive_the_engine(tmp_path: Path) -> None:
    engine = SimEngine(data_dir=tmp_path)
    session = engine.open_session("acme", Listener())
    await session.connect()
    sent = await session.send(
        SendPoll(type="poll", to="5511999999999", question="Q?", options=["a", "b"]), NO_CONTEXT
    )
    assert sent.poll_secret is not None
    restarted = SimEngine(data_dir=tmp_path)
    listener = Listener()
    await restarted.open_session("acme", listener).connect()
    await play_vote(restarted, "5511999999999", sent.message_id, ["b"])
    await until(lambda: bool(listener.votes))
    vote = listener.votes[0]
    opened = decrypt_vote(
        sent.poll_secret, vote.poll_id, vote.poll_sender, vote.voter, vote.enc_payload, vote.enc_iv
    )
    assert opened == [option_hash("b")]
    await restarted.close()


def seen_message(message_id: str, **fields: object) -> SeenMessage:
    values: dict[str, object] = {
        "message_id": message_id, "chat": "5511999999999@s.whatsapp.net",
        "sender": "5511999999999@s.whatsapp.net", "from_me": False,
        "timestamp": datetime(2026, 3, 1, 12, 0, tzinfo=UTC), "kind": MessageKind.TEXT,
        "text": "earlier", "raw": b"engine copy", "poll_secret": b"s" * 32,
    }  # fmt: skip
    return SeenMessage.model_validate(values | fields)


async def test_the_record_of_a_send_carries_what_the_connector_prepared() -> None:
    engine, session, _ = await open_session()
    media = PreparedMedia(
        b"OggS voice", "audio/ogg; codecs=opus", seconds=3, waveform=bytes([0, 50, 99])
    )
    preview = LinkPreview("https://example.com/a", "A page", "About it", b"\xff\xd8" + b"j" * 10)
    quoted = seen_message("3EB0QUOTED", text="quoted words")
    target = seen_message("3EB0TARGET", kind=MessageKind.IMAGE, text=None)
    context = SendContext(media=media, preview=preview, quoted=quoted, target=target)
    reaction = SendReaction(
        type="reaction", to="5511999999999", message_id="3EB0TARGET", emoji="👍"
    )
    sent = await session.send(reaction, context)
    plain = await session.send(SendText(to="5511999999999", text="plain"), NO_CONTEXT)
    answer = await engine.control("acme", "sent", b"")
    first, second = answer["sent"]
    assert (first["message_id"], second["message_id"]) == (sent.message_id, plain.message_id)
    assert first["context"]["media"] == {
        "mimetype": "audio/ogg; codecs=opus",
        "size": len(b"OggS voice"),
        "sha256": hashlib.sha256(b"OggS voice").hexdigest(),
        "seconds": 3,
        "waveform": [0, 50, 99],
        "animated": False,
    }
    assert first["context"]["preview"] == {
        "url": "https://example.com/a", "title": "A page", "description": "About it",
        "thumbnail_size": 12,
    }  # fmt: skip
    assert first["context"]["quoted"]["message_id"] == "3EB0QUOTED"
    assert first["context"]["quoted"]["text"] == "quoted words"
    assert first["context"]["target"]["message_id"] == "3EB0TARGET"
    assert first["context"]["target"]["kind"] == "image"
    for name in ("quoted", "target"):  # the engine's copy and a poll's secret stay out
        assert "raw" not in first["context"][name]
        assert "poll_secret" not in first["context"][name]
        assert first["context"][name]["sender"] == "5511999999999@s.whatsapp.net"
    assert second["context"] == {}  # nothing prepared, nothing recorded
    assert json.loads(json.dumps(answer)) == answer  # what the control answers is JSON


async def test_a_device_connected_twice_across_engines_sharing_a_data_dir_is_a_conflict(
    tmp_path: Path,
) -> None:
    """Two connectors (two engines on one data directory) opening one device: recorded, as the
    network would replace one connection with the other; one after the other: not."""
    first, second = SimEngine(data_dir=tmp_path), SimEngine(data_dir=tmp_path)
    one = first.open_session("acme", Listener())
    await one.connect()
    await one.disconnect()
    other = second.open_session("acme", Listener())
    await other.connect()  # the first connection ended: no conflict (positive control)
    socket = second.device("acme").socket
    assert socket is not None
    assert socket.conflicts() == []
    again = first.open_session("acme", Listener())
    await again.connect()  # while `other` is still open
    [conflict] = socket.conflicts()
    assert conflict["instance"] == "acme"
