"""What the connector works out before an engine builds a send (`connector.preparation`): media
from inline base64 (and its mimetype: declared, else sniffed, else the kind's default),
conversions where WhatsApp needs them, and the pure rules about the message a send refers to
(`check_target`, `quoted_of`, `sent_seen`), as tables. Media fetched by URL is tested against
a real server in `tests/integration/test_neonize_media_fetch.py`."""

from __future__ import annotations

import base64
import io
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, cast

import pytest
from PIL import Image
from pydantic import ValidationError

from connector.engine import PreparedMedia, QueryError, SendError, SentMessage
from connector.memory import MessageMemory
from connector.preparation import (
    DEFAULT_MIMETYPE,
    VOICE_MIMETYPE,
    Preparer,
    check_target,
    decode_base64,
    load_media,
    prepare_media,
    quoted_of,
    sent_seen,
    sniffed_mimetype,
)
from connector.seen import SeenMessage
from schemas.commands import (
    EDIT_WINDOW_SECONDS,
    SendMessage,
    SendSticker,
    parse_send,
)
from schemas.events import MessageKind
from schemas.queries import GroupInfo, GroupParticipant
from tests.media_samples import image_bytes, wav_tone
from wabus.voice import to_voice_note

PNG = b"\x89PNG\r\n\x1a\n" + bytes.fromhex("0000000d49484452000000010000000108060000001f15c489")
PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n"
WEBP = b"RIFF\x00\x00\x00\x00WEBPVP8 "
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
PEER = "4915112345678"
PEER_JID = f"{PEER}@s.whatsapp.net"
GROUP = "120363000000000001@g.us"
BO = "1555000111"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def send(**fields: Any) -> SendMessage:
    return parse_send({"to": PEER} | fields)


def seen(**fields: Any) -> SeenMessage:
    values: dict[str, Any] = {
        "message_id": "3EB0SEEN",
        "chat": PEER_JID,
        "sender": PEER_JID,
        "from_me": False,
        "timestamp": NOW,
        "kind": MessageKind.TEXT,
        "text": "earlier",
    }
    return SeenMessage(**(values | fields))


def png_image(width: int = 40, height: int = 20) -> bytes:
    return image_bytes("PNG", width, height)


# -- media --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "data", "expected"),
    [
        ("image", PNG, "image/png"),
        ("document", PDF, "application/pdf"),
        ("sticker", WEBP, "image/webp"),
        ("video", b"\x00\x01", "video/mp4"),  # octet-stream: the kind's default
        ("document", b"hello world", "application/octet-stream"),  # text/plain: the default
        ("image", b"hello world", "image/jpeg"),
        ("audio", b"\x00\x01", "audio/ogg; codecs=opus"),
    ],
)
def test_sniffed_mimetype(kind: str, data: bytes, expected: str) -> None:
    assert sniffed_mimetype(kind, data) == expected


def to_ogg(wav: bytes) -> bytes:
    return to_voice_note(wav).data


def test_sniffed_ogg_audio_names_its_codec() -> None:
    voice = to_ogg(wav_tone())
    assert sniffed_mimetype("document", voice) == VOICE_MIMETYPE  # not bare `audio/ogg`
    assert sniffed_mimetype("document", wav_tone()) == "audio/x-wav"  # the control


def test_every_media_kind_has_a_default_mimetype() -> None:
    assert set(DEFAULT_MIMETYPE) == {"image", "video", "audio", "document", "sticker"}


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"type": "image", "base64": b64(PNG), "mimetype": "image/x-test"}, (PNG, "image/x-test")),
        ({"type": "image", "base64": b64(PNG)}, (PNG, "image/png")),
        ({"type": "document", "base64": b64(PDF)}, (PDF, "application/pdf")),
        ({"type": "video", "base64": b64(b"\x00\x01")}, (b"\x00\x01", "video/mp4")),
        ({"type": "sticker", "base64": b64(WEBP)}, (WEBP, "image/webp")),
    ],
)
async def test_base64_media_loads_declared_else_sniffed_else_default(
    fields: dict[str, Any], expected: tuple[bytes, str]
) -> None:
    message = send(**fields)
    assert await load_media(cast(Any, message)) == expected


async def test_base64_media_over_the_limit_is_refused() -> None:
    message: Any = send(type="document", base64=b64(PDF))
    with pytest.raises(SendError) as large:
        await load_media(message, limit=len(PDF) - 1)
    assert (large.value.code, large.value.retryable) == ("media_too_large", False)
    assert await load_media(message, limit=len(PDF)) == (PDF, "application/pdf")  # the control


@pytest.mark.parametrize(
    ("value", "limit", "code"),
    [
        ("not base64!", 100, "invalid_media"),
        ("aGVsbG8", 100, "invalid_media"),  # unpadded: not strict base64
        ("", 100, "invalid_media"),  # decodes to no bytes
        (b64(b"x" * 11), 10, "media_too_large"),
    ],
)
def test_base64_errors_are_send_errors(value: str, limit: int, code: str) -> None:
    with pytest.raises(SendError) as refused:
        decode_base64(value, limit)
    assert refused.value.code == code
    assert not refused.value.retryable


def test_base64_within_the_limit_decodes() -> None:
    assert decode_base64(b64(b"x" * 10), limit=10) == b"x" * 10
    assert decode_base64("aGVsbG8=") == b"hello"


async def test_plain_media_is_prepared_as_loaded() -> None:
    message: Any = send(type="image", base64=b64(PNG), caption="look")
    assert await prepare_media(message) == PreparedMedia(PNG, "image/png")
    song: Any = send(type="audio", base64=b64(b"ID3" + b"\x00" * 40), mimetype="audio/mpeg")
    prepared = await prepare_media(song)
    assert (prepared.mimetype, prepared.seconds, prepared.waveform) == ("audio/mpeg", None, None)


async def test_a_voice_note_is_converted_with_its_seconds_and_waveform() -> None:
    message: Any = send(type="audio", base64=b64(wav_tone(seconds=2.0)), voice=True)
    prepared = await prepare_media(message)
    assert prepared.mimetype == VOICE_MIMETYPE
    assert prepared.data.startswith(b"OggS")
    assert prepared.seconds == 2
    assert prepared.waveform is not None
    assert len(prepared.waveform) == 64


async def test_a_sticker_is_converted_to_webp() -> None:
    message = send(type="sticker", base64=b64(png_image()))
    assert isinstance(message, SendSticker)
    prepared = await prepare_media(message)
    assert prepared.mimetype == "image/webp"
    assert prepared.data[:4] == b"RIFF"
    assert prepared.data[8:12] == b"WEBP"
    assert not prepared.animated
    with Image.open(io.BytesIO(prepared.data)) as image:
        assert image.size == (512, 512)


@pytest.mark.parametrize(
    "fields",
    [
        {"type": "sticker", "base64": b64(b"not an image at all")},
        {"type": "audio", "base64": b64(b"not audio at all"), "voice": True},
    ],
)
async def test_a_failed_conversion_is_a_send_error(fields: dict[str, Any]) -> None:
    with pytest.raises(SendError) as refused:
        await prepare_media(cast(Any, send(**fields)))
    assert refused.value.code in {"unsupported_media", "undecodable_media"}
    assert not refused.value.retryable


# -- the message a send is about ------------------------------------------------------------

EDIT = {"type": "edit", "message_id": "3EB0SEEN", "text": "fixed"}
FORWARD = {"type": "forward", "message_id": "3EB0SEEN"}
WINDOW = timedelta(seconds=EDIT_WINDOW_SECONDS)
SECOND = timedelta(seconds=1)


@pytest.mark.parametrize(
    ("fields", "target", "code"),
    [
        (EDIT, seen(from_me=False), "not_own_message"),
        (EDIT, seen(from_me=True, timestamp=NOW - WINDOW - SECOND), "edit_window_passed"),
        (EDIT, seen(from_me=True, timestamp=NOW - timedelta(hours=3)), "edit_window_passed"),
        (FORWARD, None, "message_unknown"),
        (FORWARD, seen(kind=MessageKind.POLL, raw=b"poll"), "not_forwardable"),
        (FORWARD, seen(kind=MessageKind.UNKNOWN, raw=b"x"), "not_forwardable"),
        (FORWARD, seen(kind=MessageKind.TEXT, raw=None), "not_forwardable"),
        (FORWARD, seen(kind=MessageKind.IMAGE, raw=None), "not_forwardable"),
        (FORWARD, seen(kind=MessageKind.IMAGE, raw=b"x", view_once=True), "not_forwardable"),
    ],
)
def test_check_target_refuses(
    fields: dict[str, Any], target: SeenMessage | None, code: str
) -> None:
    with pytest.raises(SendError) as refused:
        check_target(send(**fields), target, NOW)
    assert refused.value.code == code
    assert not refused.value.retryable


@pytest.mark.parametrize(
    ("fields", "target"),
    [
        (EDIT, seen(from_me=True, timestamp=NOW - WINDOW + SECOND)),  # just inside
        (EDIT, seen(from_me=True, timestamp=NOW - WINDOW)),  # exactly 15 minutes
        (EDIT, seen(from_me=True, timestamp=NOW)),
        (EDIT, None),  # not seen: WhatsApp decides
        (FORWARD, seen(kind=MessageKind.TEXT, raw=b"\n\x02hi")),
        (FORWARD, seen(kind=MessageKind.IMAGE, raw=b"image")),
        (FORWARD, seen(kind=MessageKind.CONTACT, from_me=True, raw=b"card")),
        ({"type": "reaction", "message_id": "3EB0SEEN", "emoji": "👍"}, None),
        ({"type": "reaction", "message_id": "3EB0SEEN", "emoji": "👍"}, seen()),
        ({"type": "delete", "message_id": "3EB0SEEN"}, seen(from_me=False)),  # an admin's
        ({"type": "text", "text": "no target"}, None),
    ],
)
def test_check_target_allows(fields: dict[str, Any], target: SeenMessage | None) -> None:
    check_target(send(**fields), target, NOW)


def test_the_edit_window_is_whatsapps_15_minutes() -> None:
    assert EDIT_WINDOW_SECONDS == 15 * 60


def test_quoted_of_prefers_what_the_connector_saw() -> None:
    remembered = seen(text="as seen")
    message = send(text="re", reply_to="3EB0SEEN", quoted={"sender": "1555000111", "text": "said"})
    assert quoted_of(message, remembered) is remembered


@pytest.mark.parametrize(
    "fields",
    [
        {"text": "no reply"},
        {"text": "reply to the unseen, undescribed", "reply_to": "3EB0SEEN"},
    ],
)
def test_quoted_of_is_none_without_a_seen_or_described_message(fields: dict[str, Any]) -> None:
    assert quoted_of(send(**fields), None) is None


@pytest.mark.parametrize(
    ("to", "quoted", "chat", "sender", "text"),
    [
        (
            PEER,
            {"sender": "+1 555 000-111", "text": "said"},
            PEER_JID,
            f"{BO}@s.whatsapp.net",
            "said",
        ),
        (GROUP, {"sender": "1555000111@lid"}, GROUP, "1555000111@lid", None),
    ],
)
def test_quoted_of_describes_the_message_as_the_caller_said(
    to: str, quoted: dict[str, Any], chat: str, sender: str, text: str | None
) -> None:
    message = parse_send({"to": to, "text": "re", "reply_to": "3EB0UNSEEN", "quoted": quoted})
    described = quoted_of(message, None)
    assert described is not None
    assert (described.message_id, described.chat, described.sender) == ("3EB0UNSEEN", chat, sender)
    assert (described.from_me, described.kind, described.text) == (False, MessageKind.TEXT, text)
    assert described.raw is None


CARD = {"name": "Bo", "phones": ["1555000111"]}
SENT = SentMessage(
    message_id="3EB0SENT", chat=PEER_JID, timestamp=NOW, raw=b"copy", poll_secret=None
)


@pytest.mark.parametrize(
    ("fields", "kind", "text"),
    [
        ({"text": "hello"}, MessageKind.TEXT, "hello"),
        ({"type": "image", "base64": b64(PNG), "caption": "look"}, MessageKind.IMAGE, "look"),
        ({"type": "image", "base64": b64(PNG)}, MessageKind.IMAGE, None),
        ({"type": "video", "base64": b64(b"v"), "caption": "clip"}, MessageKind.VIDEO, "clip"),
        ({"type": "audio", "base64": b64(b"a"), "voice": True}, MessageKind.AUDIO, None),
        ({"type": "document", "base64": b64(PDF), "caption": "pay"}, MessageKind.DOCUMENT, "pay"),
        ({"type": "sticker", "base64": b64(WEBP)}, MessageKind.STICKER, None),
        ({"type": "location", "latitude": 1.5, "longitude": 2.5}, MessageKind.LOCATION, None),
        ({"type": "contact", "contacts": [CARD]}, MessageKind.CONTACT, None),
    ],
)
def test_sent_seen_remembers_messages_of_their_own(
    fields: dict[str, Any], kind: MessageKind, text: str | None
) -> None:
    remembered = sent_seen(send(**fields), SENT, None)
    assert remembered is not None
    assert (remembered.kind, remembered.text) == (kind, text)
    assert (remembered.message_id, remembered.chat, remembered.timestamp) == (
        "3EB0SENT",
        PEER_JID,
        NOW,
    )
    assert remembered.from_me
    assert remembered.raw == b"copy"
    assert (remembered.poll_options, remembered.poll_secret) == ([], None)


def test_sent_seen_remembers_a_polls_options_and_secret() -> None:
    poll = send(type="poll", question="Drink?", options=["tea", "coffee"])
    sent = SentMessage("3EB0POLL", PEER_JID, NOW, raw=b"poll", poll_secret=b"s" * 32)
    remembered = sent_seen(poll, sent, None)
    assert remembered is not None
    assert remembered.kind is MessageKind.POLL
    assert remembered.poll_options == ["tea", "coffee"]
    assert remembered.poll_secret == b"s" * 32


@pytest.mark.parametrize(
    ("target", "kind", "text"),
    [
        (
            seen(kind=MessageKind.IMAGE, text="a caption", raw=b"img"),
            MessageKind.IMAGE,
            "a caption",
        ),
        (seen(kind=MessageKind.TEXT, text="words", raw=b"txt"), MessageKind.TEXT, "words"),
    ],
)
def test_sent_seen_remembers_a_forward_as_what_it_forwarded(
    target: SeenMessage, kind: MessageKind, text: str
) -> None:
    remembered = sent_seen(send(**FORWARD), SENT, target)
    assert remembered is not None
    assert (remembered.kind, remembered.text, remembered.from_me) == (kind, text, True)
    assert remembered.message_id == "3EB0SENT"  # the forward's own id, not the original's
    assert remembered.raw == b"copy"


@pytest.mark.parametrize(
    ("fields", "target"),
    [
        ({"type": "reaction", "message_id": "3EB0SEEN", "emoji": "👍"}, seen()),
        (EDIT, seen(from_me=True)),
        ({"type": "delete", "message_id": "3EB0SEEN"}, seen()),
        (FORWARD, None),
    ],
)
def test_sent_seen_forgets_sends_about_other_messages(
    fields: dict[str, Any], target: SeenMessage | None
) -> None:
    assert sent_seen(send(**fields), SENT, target) is None


# -- the preparer, on a memory that answers from a dict --------------------------------------


class Memory:
    """What `Preparer` uses of `MessageMemory`: recall and remember, in a dict."""

    def __init__(self, *messages: SeenMessage) -> None:
        self.kept = {("acme", m.message_id): m for m in messages}
        self.recalled: list[str] = []

    async def recall(self, instance: str, message_id: str) -> SeenMessage | None:
        self.recalled.append(message_id)
        return self.kept.get((instance, message_id))

    async def remember(self, instance: str, message: SeenMessage) -> None:
        self.kept[(instance, message.message_id)] = message


def preparer(*messages: SeenMessage) -> tuple[Preparer, Memory]:
    memory = Memory(*messages)
    return Preparer(cast(MessageMemory, memory)), memory


async def test_the_preparer_finds_the_target_and_the_quote() -> None:
    target = seen(message_id="3EB0TARGET", sender="1555000111@s.whatsapp.net")
    quoted = seen(message_id="3EB0QUOTED", text="what they said")
    prepare, memory = preparer(target, quoted)
    reaction = send(type="reaction", message_id="3EB0TARGET", emoji="👍", reply_to="3EB0QUOTED")
    context = await prepare.prepare("acme", reaction, SESSION)
    assert (context.target, context.quoted) == (target, quoted)
    assert (context.media, context.preview) == (None, None)
    assert memory.recalled == ["3EB0TARGET", "3EB0QUOTED"]


async def test_the_preparer_applies_the_rules_to_what_it_recalled() -> None:
    theirs = seen(message_id="3EB0THEIRS", from_me=False, raw=None)
    mine = seen(message_id="3EB0MINE", from_me=True, timestamp=datetime.now(UTC), raw=b"\n\x02hi")
    prepare, _ = preparer(theirs, mine)
    with pytest.raises(SendError) as refused:
        await prepare.prepare("acme", send(type="edit", message_id="3EB0THEIRS", text="x"), SESSION)
    assert refused.value.code == "not_own_message"
    with pytest.raises(SendError) as unknown:
        await prepare.prepare("acme", send(type="forward", message_id="3EB0NEVER"), SESSION)
    assert unknown.value.code == "message_unknown"
    with pytest.raises(SendError) as no_copy:
        await prepare.prepare("acme", send(type="forward", message_id="3EB0THEIRS"), SESSION)
    assert no_copy.value.code == "not_forwardable"
    # the controls: our own fresh message may be edited and forwarded
    edit = await prepare.prepare(
        "acme", send(type="edit", message_id="3EB0MINE", text="x"), SESSION
    )
    assert edit.target == mine
    forward = await prepare.prepare("acme", send(type="forward", message_id="3EB0MINE"), SESSION)
    assert forward.target == mine


async def test_the_preparer_without_a_memory_uses_what_the_caller_said() -> None:
    prepare = Preparer(None)
    message = send(
        text="see https://example.com/a",
        reply_to="3EB0UNSEEN",
        quoted={"sender": "1555000111", "text": "said"},
        link_preview={"url": "https://example.com/a", "title": "A", "thumbnail_base64": b64(b"j")},
    )
    context = await prepare.prepare("acme", message, SESSION)
    assert context.quoted is not None
    assert (context.quoted.sender, context.quoted.text) == ("1555000111@s.whatsapp.net", "said")
    assert context.preview is not None
    assert (context.preview.url, context.preview.title) == ("https://example.com/a", "A")
    assert (context.preview.description, context.preview.thumbnail) == (None, b"j")
    media = await prepare.prepare("acme", send(type="image", base64=b64(PNG)), SESSION)
    assert media.media == PreparedMedia(PNG, "image/png")
    assert (media.quoted, media.preview, media.target) == (None, None, None)


async def test_the_preparer_remembers_what_was_sent() -> None:
    prepare, memory = preparer()
    message = send(text="kept")
    context = await prepare.prepare("acme", message, SESSION)
    await prepare.remember_sent("acme", message, SENT, context)
    assert memory.kept[("acme", "3EB0SENT")].text == "kept"
    reaction = send(type="reaction", message_id="3EB0SENT", emoji="👍")
    react_sent = SentMessage("3EB0REACT", PEER_JID, NOW)
    await prepare.remember_sent(
        "acme", reaction, react_sent, await prepare.prepare("acme", reaction, SESSION)
    )
    assert ("acme", "3EB0REACT") not in memory.kept


class GroupsSession:
    """The one thing preparation asks of a session: a group's participants."""

    groups: ClassVar[dict[str, list[str]]] = {
        "120363000000000001@g.us": ["1555000111@s.whatsapp.net", "1555000222@s.whatsapp.net"]
    }

    async def query(self, name: str, request: Any) -> Any:
        assert name == "group_info"
        members = self.groups.get(request.group)
        if members is None:
            raise QueryError("unknown_group", f"no group {request.group}")
        return GroupInfo(
            jid=request.group, name="g", participants=[GroupParticipant(jid=j) for j in members]
        )


SESSION: Any = GroupsSession()


async def test_mention_all_mentions_every_participant_once() -> None:
    prepare = Preparer(None)
    message = send(
        to="120363000000000001@g.us",
        text="all hands",
        mention_all=True,
        mentions=["1555000111", "1555000999"],
    )
    context = await prepare.prepare("acme", message, SESSION)
    assert context.mentions == (
        "1555000111@s.whatsapp.net",
        "1555000999@s.whatsapp.net",
        "1555000222@s.whatsapp.net",
    )
    plain = await prepare.prepare("acme", send(to="120363000000000001@g.us", text="x"), SESSION)
    assert plain.mentions == ()  # the control: nobody without mention_all or mentions
    gone = send(to="120363000000000009@g.us", text="x", mention_all=True)
    with pytest.raises(SendError) as refused:
        await prepare.prepare("acme", gone, SESSION)
    assert refused.value.code == "unknown_group"


class LidGroupSession:
    """A group that lists its participants by LID, with their phone-number JIDs beside."""

    async def query(self, name: str, request: Any) -> Any:
        return GroupInfo(
            jid=request.group,
            name="g",
            participants=[
                GroupParticipant(jid="201000111@lid", phone_jid="1555000111@s.whatsapp.net"),
                GroupParticipant(jid="201000222@lid", phone_jid="1555000222@s.whatsapp.net"),
            ],
        )


@pytest.mark.parametrize(
    ("session", "account", "expected"),
    [
        # the account sending is a participant: everyone else is mentioned
        (SESSION, "1555000111@s.whatsapp.net", ("1555000222@s.whatsapp.net",)),
        # the account as the session reports it, with its device: the same person
        (SESSION, "1555000111:12@s.whatsapp.net", ("1555000222@s.whatsapp.net",)),
        # listed by LID: recognised by the phone-number JID beside it
        (LidGroupSession(), "1555000222@s.whatsapp.net", ("201000111@lid",)),
        # the control: no account known, every participant
        (SESSION, None, ("1555000111@s.whatsapp.net", "1555000222@s.whatsapp.net")),
        # an account that is not in the group leaves nobody out
        (
            SESSION,
            "1555000999@s.whatsapp.net",
            ("1555000111@s.whatsapp.net", "1555000222@s.whatsapp.net"),
        ),
    ],
)
async def test_mention_all_leaves_out_the_account_that_sends(
    session: Any, account: str | None, expected: tuple[str, ...]
) -> None:
    message = send(to="120363000000000001@g.us", text="all hands", mention_all=True)
    context = await Preparer(None).prepare("acme", message, session, account)
    assert context.mentions == expected


async def test_mentioning_oneself_by_name_is_kept() -> None:
    """`mentions` are what the caller asked for: only `mention_all`'s expansion skips the
    account."""
    message = send(
        to="120363000000000001@g.us", text="me", mention_all=True, mentions=["1555000111"]
    )
    context = await Preparer(None).prepare("acme", message, SESSION, "1555000111@s.whatsapp.net")
    assert context.mentions == ("1555000111@s.whatsapp.net", "1555000222@s.whatsapp.net")


def test_mention_all_is_for_groups_only() -> None:
    with pytest.raises(ValidationError, match="mention_all"):
        send(to="5511999999999", text="x", mention_all=True)
