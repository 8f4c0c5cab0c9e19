"""Everything a send needs before an engine builds it, found out once for every engine.

The media bytes (inline base64 or a URL fetched through the SSRF guard, size-capped), converted
where WhatsApp insists (voice notes to Ogg/Opus, stickers to 512x512 WebP); the link preview;
the quoted message and the message a reaction, edit, deletion or forward is about, from the
connector's memory (`connector.memory`) or from what the caller said; and the rules that need
them (only our own messages are edited, within WhatsApp's 15 minutes; only a message seen can
be forwarded). Failures are `SendError`s with stable codes, which end in `message.failed`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from datetime import datetime, timedelta

import aiohttp
import magic

from connector.engine import (
    EngineSession,
    PreparedMedia,
    QueryError,
    SendContext,
    SendError,
    SentMessage,
)
from connector.fetch import FetchError, fetch_bytes
from connector.link_preview import LinkPreview, fetch_preview, first_url
from connector.memory import MessageMemory
from connector.seen import SeenMessage
from schemas.commands import (
    EDIT_WINDOW_SECONDS,
    MAX_MEDIA_BYTES,
    SendAudio,
    SendDelete,
    SendEdit,
    SendForward,
    SendMedia,
    SendMessage,
    SendPoll,
    SendReaction,
    SendSticker,
    SendText,
    jid_string,
    non_device_jid,
)
from schemas.commands import (
    LinkPreview as GivenPreview,
)
from schemas.envelope import utc_now
from schemas.events import MessageKind
from schemas.queries import GroupInfo, GroupParticipant, GroupQuery
from wabus.conversion import ConversionError, in_turn
from wabus.ssrf import Network
from wabus.stickers import to_sticker
from wabus.voice import to_voice_note

FETCH_TIMEOUT = aiohttp.ClientTimeout(total=60, sock_connect=10)

DEFAULT_MIMETYPE = {
    "image": "image/jpeg",
    "video": "video/mp4",
    "audio": "audio/ogg; codecs=opus",
    "document": "application/octet-stream",
    "sticker": "image/webp",
}
VOICE_MIMETYPE = "audio/ogg; codecs=opus"
NOT_FORWARDABLE = frozenset({MessageKind.POLL, MessageKind.UNKNOWN})
SENT_KIND: dict[str, MessageKind] = {
    "text": MessageKind.TEXT,
    "image": MessageKind.IMAGE,
    "video": MessageKind.VIDEO,
    "audio": MessageKind.AUDIO,
    "document": MessageKind.DOCUMENT,
    "sticker": MessageKind.STICKER,
    "location": MessageKind.LOCATION,
    "contact": MessageKind.CONTACT,
    "poll": MessageKind.POLL,
}
"""The kinds of send that are messages of their own (remembered once sent)."""


def _opus(mimetype: str) -> str:
    """WhatsApp plays Ogg audio only when told the codec."""
    return VOICE_MIMETYPE if mimetype == "audio/ogg" else mimetype


def sniffed_mimetype(kind: str, data: bytes) -> str:
    """What the bytes look like, else the kind's usual type."""
    sniffed = magic.from_buffer(data[:4096], mime=True)
    if sniffed and sniffed not in {"application/octet-stream", "text/plain"}:
        return _opus(sniffed)
    return DEFAULT_MIMETYPE[kind]


def decode_base64(value: str, limit: int = MAX_MEDIA_BYTES) -> bytes:
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as error:
        raise SendError("invalid_media", "`base64` is not valid base64") from error
    if len(data) > limit:
        raise SendError("media_too_large", f"media is larger than {limit} bytes")
    if not data:
        raise SendError("invalid_media", "`base64` decodes to no bytes")
    return data


async def load_media(
    message: SendMedia, allow: Sequence[Network] = (), limit: int = MAX_MEDIA_BYTES
) -> tuple[bytes, str]:
    """The bytes of a media send and their mimetype: declared, else the URL's content type,
    else sniffed."""
    if message.base64 is not None:
        data = decode_base64(message.base64, limit)
        return data, message.mimetype or sniffed_mimetype(message.type, data)
    assert message.url is not None  # the model requires exactly one source
    try:
        fetched = await fetch_bytes(message.url, allow=allow, limit=limit, timeout=FETCH_TIMEOUT)
    except FetchError as error:
        raise SendError(error.code, error.reason, retryable=error.retryable) from error
    if message.mimetype:
        return fetched.data, message.mimetype
    if fetched.content_type:
        declared = fetched.content_type.split(";", 1)[0].strip().lower()
        if declared and declared not in {"application/octet-stream", "binary/octet-stream"}:
            return fetched.data, _opus(declared)
    return fetched.data, sniffed_mimetype(message.type, fetched.data)


async def prepare_media(
    message: SendMedia, allow: Sequence[Network] = (), limit: int = MAX_MEDIA_BYTES
) -> PreparedMedia:
    """Loaded and, for voice notes and stickers, converted (in a thread, in turn: it is CPU
    work and memory, `wabus.conversion.in_turn`)."""
    data, mimetype = await load_media(message, allow, limit)
    try:
        if isinstance(message, SendAudio) and message.voice:
            note = await in_turn(to_voice_note, data)
            return PreparedMedia(
                note.data, VOICE_MIMETYPE, seconds=note.seconds, waveform=note.waveform
            )
        if isinstance(message, SendSticker):
            sticker = await in_turn(to_sticker, data)
            return PreparedMedia(sticker.data, "image/webp", animated=sticker.animated)
    except ConversionError as error:
        raise SendError(error.code, error.reason) from error
    return PreparedMedia(data, mimetype)


def given_preview(preview: GivenPreview) -> LinkPreview:
    thumbnail = None
    if preview.thumbnail_base64 is not None:
        thumbnail = base64.b64decode(preview.thumbnail_base64)
    return LinkPreview(preview.url, preview.title, preview.description, thumbnail)


def check_target(message: SendMessage, target: SeenMessage | None, now: datetime) -> None:
    """The rules about the message an edit or forward is about; raises `SendError`."""
    if isinstance(message, SendEdit) and target is not None:
        if not target.from_me:
            raise SendError("not_own_message", "only your own messages can be edited")
        if now - target.timestamp > timedelta(seconds=EDIT_WINDOW_SECONDS):
            raise SendError(
                "edit_window_passed",
                f"WhatsApp allows edits for {EDIT_WINDOW_SECONDS // 60} minutes; message "
                f"{target.message_id} was sent at {target.timestamp.isoformat()}",
            )
    if isinstance(message, SendForward):
        if target is None:
            raise SendError(
                "message_unknown",
                f"message {message.message_id} was not seen by the connector (or is older than "
                "WABUS_MESSAGE_MEMORY_DAYS): only a message it saw can be forwarded",
            )
        if target.view_once:
            raise SendError("not_forwardable", "view-once media cannot be forwarded")
        if target.kind in NOT_FORWARDABLE or target.raw is None:
            raise SendError("not_forwardable", f"a {target.kind.value} message cannot be forwarded")


def quoted_of(message: SendMessage, seen: SeenMessage | None) -> SeenMessage | None:
    """The quoted message: as the connector saw it, else as the caller described it."""
    if seen is not None or message.reply_to is None or message.quoted is None:
        return seen
    return SeenMessage(
        message_id=message.reply_to,
        chat=jid_string(message.to),
        sender=jid_string(message.quoted.sender),
        from_me=False,
        timestamp=utc_now(),
        kind=MessageKind.TEXT,
        text=message.quoted.text,
    )


def sent_seen(
    message: SendMessage, sent: SentMessage, target: SeenMessage | None
) -> SeenMessage | None:
    """What to remember of a message we sent; None for sends about other messages."""
    kind = SENT_KIND.get(message.type)
    if isinstance(message, SendForward) and target is not None:
        kind = target.kind
    if kind is None:
        return None
    text: str | None = None
    if isinstance(message, SendText):
        text = message.text
    elif isinstance(message, SendForward) and target is not None:
        text = target.text
    elif hasattr(message, "caption"):
        text = message.caption
    return SeenMessage(
        message_id=sent.message_id,
        chat=sent.chat,
        sender="",
        from_me=True,
        timestamp=sent.timestamp,
        kind=kind,
        text=text,
        view_once=bool(getattr(message, "view_once", False)),
        raw=sent.raw,
        poll_options=message.options if isinstance(message, SendPoll) else [],
        poll_secret=sent.poll_secret,
    )


async def participants(session: EngineSession, group: str, account: str | None = None) -> list[str]:
    """Every participant of `group` but the `account` sending (by its phone-number JID, also
    when the group lists it by LID), to mention them all; its refusal is the send's."""
    try:
        info = await session.query("group_info", GroupQuery(group=group))
    except QueryError as error:
        raise SendError(error.code, error.reason) from error
    assert isinstance(info, GroupInfo)
    own = non_device_jid(account) if account else None
    return [p.jid for p in info.participants if own is None or not _is_account(p, own)]


def _is_account(participant: GroupParticipant, own: str) -> bool:
    """`participant` is the account `own` (its JID without device): by its JID, or by the
    phone-number JID beside it when the group lists it by LID."""
    return any(
        non_device_jid(jid) == own for jid in (participant.jid, participant.phone_jid) if jid
    )


class Preparer:
    """Prepares sends and remembers what was sent, for one connector."""

    def __init__(self, memory: MessageMemory | None, allow: Sequence[Network] = ()) -> None:
        self._memory = memory
        self._allow = tuple(allow)

    async def _recall(self, instance: str, message_id: str | None) -> SeenMessage | None:
        if self._memory is None or message_id is None:
            return None
        return await self._memory.recall(instance, message_id)

    async def prepare(
        self,
        instance: str,
        message: SendMessage,
        session: EngineSession,
        account: str | None = None,
    ) -> SendContext:
        """`account`: the JID the session is logged in as (`mention_all` leaves it out)."""
        target = None
        if isinstance(message, SendReaction | SendEdit | SendDelete | SendForward):
            target = await self._recall(instance, message.message_id)
            check_target(message, target, utc_now())
        quoted = quoted_of(message, await self._recall(instance, message.reply_to))
        media = None
        if isinstance(message, SendMedia):
            media = await prepare_media(message, self._allow)
        preview = None
        if isinstance(message, SendText):
            if isinstance(message.link_preview, GivenPreview):
                preview = given_preview(message.link_preview)
            elif message.link_preview and (url := first_url(message.text)) is not None:
                preview = await fetch_preview(url, allow=self._allow)
        mentions = [jid_string(jid) for jid in message.mentions]
        if message.mention_all:
            mentions += await participants(session, message.to, account)
        return SendContext(
            media=media,
            preview=preview,
            quoted=quoted,
            target=target,
            mentions=tuple(dict.fromkeys(mentions)),
        )

    async def remember_sent(
        self, instance: str, message: SendMessage, sent: SentMessage, context: SendContext
    ) -> None:
        seen = sent_seen(message, sent, context.target)
        if self._memory is not None and seen is not None:
            await self._memory.remember(instance, seen)
