"""Send commands as neonize protobufs: pure builders, one per kind of send.

wabus builds the waE2E messages itself instead of calling neonize's `build_*` helpers: those
fetch URLs on their own (no SSRF guard, no size cap), need ffmpeg, parse mentions out of the
text, and some need a live client; here every field comes from the validated command and what
the connector prepared (`connector.engine.SendContext`: uploaded media, the link preview, the
quoted or targeted message as the connector saw it). Each builder follows what whatsmeow's own
builders put in a message (`BuildMessageKey`, `BuildEdit`, `BuildRevoke`, `BuildPollCreation`),
so that WhatsApp renders it: a quote carries the quoted message's author and content, a
reaction or deletion in a group the author of the message it is about.
"""

from __future__ import annotations

import os
from typing import Any

from connector.engine import PreparedMedia, SendContext
from connector.engines.neonize_lib import (
    ChatPresence,
    ChatPresenceMedia,
    DecodeError,
    MediaType,
    e2e,
    nz,
    wa_common,
)
from connector.seen import SeenMessage
from schemas.commands import (
    USER_SERVER,
    ContactCard,
    Presence,
    SendAudio,
    SendContact,
    SendDelete,
    SendDocument,
    SendEdit,
    SendImage,
    SendLocation,
    SendMedia,
    SendMessage,
    SendPoll,
    SendReaction,
    SendSticker,
    SendText,
    SendVideo,
    jid_string,
    non_device_jid,
)
from wabus.logs import get_logger

log = get_logger(__name__)

USER_SERVERS = frozenset({USER_SERVER, "lid", "msgr"})
"""Chats with one person: a message key names no participant there (whatsmeow's rule)."""
POLL_SECRET_BYTES = 32

_MEDIA_TYPE = {
    "image": MediaType.MediaImage,
    "video": MediaType.MediaVideo,
    "audio": MediaType.MediaAudio,
    "document": MediaType.MediaDocument,
    "sticker": MediaType.MediaImage,
}
"""Stickers are encrypted with the image keys (whatsmeow's `GetMediaType` for stickers)."""


def to_jid(address: str) -> Any:
    """A neonize `JID` for a phone number (digits) or a JID string."""
    user, _, server = jid_string(address).partition("@")
    return nz.JID(User=user, Server=server, Device=0, RawAgent=0, Integrator=0, IsEmpty=False)


def message_key(chat: str, message_id: str, sender: str | None, own_jid: str | None) -> Any:
    """whatsmeow's `BuildMessageKey`: our own message unless `sender` is someone else, and
    then, outside one-to-one chats, the sender as `participant` (WhatsApp places a reaction or
    deletion in a group by it)."""
    chat = jid_string(chat)
    key = wa_common.MessageKey(remoteJID=chat, fromMe=True, ID=message_id)
    author = non_device_jid(jid_string(sender)) if sender else None
    if author and author.partition("@")[0] != non_device_jid(own_jid or "").partition("@")[0]:
        key.fromMe = False
        if chat.partition("@")[2] not in USER_SERVERS:
            key.participant = author
    return key


def quoted_content(seen: SeenMessage) -> Any:
    """The quoted message's content: the engine's own copy when the connector kept one, else
    its text."""
    if seen.raw is not None:
        try:
            return e2e.Message.FromString(seen.raw)
        except DecodeError:
            log.info("remembered copy unreadable: quoting the text", message_id=seen.message_id)
    return e2e.Message(conversation=seen.text or "")


def context_info(message: SendMessage, context: SendContext, own_jid: str | None) -> Any | None:
    """The ContextInfo carrying a quote and mentions; None when there is neither."""
    quoted = context.quoted
    mentions = list(context.mentions) or [jid_string(item) for item in message.mentions]
    if message.reply_to is None and not mentions:
        return None
    info = e2e.ContextInfo(mentionedJID=mentions)
    if message.reply_to is not None:
        info.stanzaID = message.reply_to
        if quoted is not None:
            author = quoted.sender if not quoted.from_me else own_jid
            if author:
                info.participant = non_device_jid(jid_string(author))
            info.quotedMessage.CopyFrom(quoted_content(quoted))
    return info


def _with_context(part: Any, info: Any | None) -> Any:
    if info is not None:
        part.contextInfo.CopyFrom(info)
    return part


def build_text(message: SendText, context: SendContext, own_jid: str | None = None) -> Any:
    """A plain `conversation`, or an `extendedTextMessage` when it quotes, mentions or
    previews a link."""
    info = context_info(message, context, own_jid)
    preview = context.preview
    if info is None and preview is None:
        return e2e.Message(conversation=message.text)
    extended = e2e.ExtendedTextMessage(text=message.text)
    if preview is not None:
        extended.matchedText = preview.url
        extended.previewType = e2e.ExtendedTextMessage.PreviewType.NONE
        if preview.title:
            extended.title = preview.title
        if preview.description:
            extended.description = preview.description
        if preview.thumbnail:
            extended.JPEGThumbnail = preview.thumbnail
    return e2e.Message(extendedTextMessage=_with_context(extended, info))


def build_location(message: SendLocation, context: SendContext, own_jid: str | None = None) -> Any:
    location = e2e.LocationMessage(
        degreesLatitude=message.latitude, degreesLongitude=message.longitude
    )
    if message.name is not None:
        location.name = message.name
    if message.address is not None:
        location.address = message.address
    _with_context(location, context_info(message, context, own_jid))
    return e2e.Message(locationMessage=location)


def build_reaction(
    message: SendReaction, context: SendContext, own_jid: str | None, now_ms: int
) -> Any:
    """A reaction (an empty emoji takes it back), keyed like whatsmeow's `BuildReaction`."""
    sender = _author(message.sender, message.from_me, context.target)
    key = message_key(message.to, message.message_id, sender, own_jid)
    return e2e.Message(
        reactionMessage=e2e.ReactionMessage(key=key, text=message.emoji, senderTimestampMS=now_ms)
    )


def _author(given: str | None, from_me: bool, target: SeenMessage | None) -> str | None:
    """The author of the message a reaction or deletion is about: as given, else as seen;
    None for our own."""
    if given is not None:
        return given
    if from_me or target is None or target.from_me:
        return None
    return target.sender


def build_delete(message: SendDelete, context: SendContext, own_jid: str | None) -> Any:
    """whatsmeow's `BuildRevoke`: a REVOKE protocol message keyed to the message."""
    sender = _author(message.sender, False, context.target)
    key = message_key(message.to, message.message_id, sender, own_jid)
    return e2e.Message(
        protocolMessage=e2e.ProtocolMessage(type=e2e.ProtocolMessage.REVOKE, key=key)
    )


def build_edit(message: SendEdit, now_ms: int) -> Any:
    """whatsmeow's `BuildEdit`: a MESSAGE_EDIT protocol message in an `editedMessage`."""
    key = wa_common.MessageKey(remoteJID=jid_string(message.to), fromMe=True, ID=message.message_id)
    protocol = e2e.ProtocolMessage(
        type=e2e.ProtocolMessage.MESSAGE_EDIT,
        key=key,
        editedMessage=e2e.Message(conversation=message.text),
        timestampMS=now_ms,
    )
    return e2e.Message(
        editedMessage=e2e.FutureProofMessage(message=e2e.Message(protocolMessage=protocol))
    )


def build_poll(
    message: SendPoll, context: SendContext, own_jid: str | None, secret: bytes | None = None
) -> Any:
    """whatsmeow's `BuildPollCreation`: the poll with a fresh 32-byte secret, which encrypts
    the votes (the connector remembers it)."""
    poll = e2e.PollCreationMessage(
        name=message.question,
        options=[e2e.PollCreationMessage.Option(optionName=name) for name in message.options],
        selectableOptionsCount=message.selectable_count,
    )
    _with_context(poll, context_info(message, context, own_jid))
    return e2e.Message(
        pollCreationMessage=poll,
        messageContextInfo=e2e.MessageContextInfo(
            messageSecret=secret if secret is not None else os.urandom(POLL_SECRET_BYTES)
        ),
    )


def vcard(card: ContactCard) -> str:
    """The card's vCard as given, else a vCard 3.0 of its name and numbers (the `waid`
    parameter makes WhatsApp offer to message the number)."""
    if card.vcard is not None:
        return card.vcard
    name = card.name.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,")
    name = name.replace("\r", " ").replace("\n", " ")
    lines = ["BEGIN:VCARD", "VERSION:3.0", f"FN:{name}", f"N:{name};;;;"]
    lines += [f"TEL;type=CELL;waid={phone}:+{phone}" for phone in card.phones]
    lines.append("END:VCARD")
    return "\n".join(lines)


def build_contacts(message: SendContact, context: SendContext, own_jid: str | None = None) -> Any:
    """One card as a `contactMessage`; several as a `contactsArrayMessage`."""
    info = context_info(message, context, own_jid)
    cards = [
        e2e.ContactMessage(displayName=card.name, vcard=vcard(card)) for card in message.contacts
    ]
    if len(cards) == 1:
        return e2e.Message(contactMessage=_with_context(cards[0], info))
    names = [card.name for card in message.contacts]
    array = e2e.ContactsArrayMessage(displayName=f"{len(names)} contacts", contacts=cards)
    return e2e.Message(contactsArrayMessage=_with_context(array, info))


_FORWARDABLE_PARTS = (
    "extendedTextMessage",
    "imageMessage",
    "videoMessage",
    "audioMessage",
    "documentMessage",
    "stickerMessage",
    "locationMessage",
    "contactMessage",
    "contactsArrayMessage",
)


def build_forward(target: SeenMessage) -> Any:
    """The remembered message's content, marked forwarded (`isForwarded`, `forwardingScore`
    one more): media is forwarded by its existing upload, which WhatsApp keeps for a limited
    time; a text becomes an `extendedTextMessage` to carry the mark."""
    assert target.raw is not None  # checked in preparation
    original = e2e.Message.FromString(target.raw)
    if original.HasField("conversation"):
        original = e2e.Message(
            extendedTextMessage=e2e.ExtendedTextMessage(text=original.conversation)
        )
    forwarded = e2e.Message()
    for field in _FORWARDABLE_PARTS:
        if original.HasField(field):
            part = getattr(forwarded, field)
            part.CopyFrom(getattr(original, field))
            score = part.contextInfo.forwardingScore
            part.ClearField("contextInfo")
            part.contextInfo.isForwarded = True
            part.contextInfo.forwardingScore = score + 1
            return forwarded
    raise ValueError("nothing forwardable in the remembered message")


def media_type(message: SendMedia) -> Any:
    """neonize's `MediaType` to upload this kind of media with (it picks the encryption keys)."""
    return _MEDIA_TYPE[message.type]


def build_media(
    message: SendMedia,
    upload: Any,
    media: PreparedMedia,
    context: SendContext,
    own_jid: str | None = None,
) -> Any:
    """The image/video/audio/document/sticker message for media already uploaded
    (`UploadResponse`); view-once media is wrapped in a `viewOnceMessage`."""
    common: dict[str, Any] = {
        "URL": upload.url,
        "directPath": upload.DirectPath,
        "mediaKey": upload.MediaKey,
        "fileEncSHA256": upload.FileEncSHA256,
        "fileSHA256": upload.FileSHA256,
        "fileLength": upload.FileLength,
        "mimetype": media.mimetype,
    }
    info = context_info(message, context, own_jid)
    if info is not None:
        common["contextInfo"] = info
    view_once = bool(getattr(message, "view_once", False))
    built: Any
    if isinstance(message, SendImage):
        built = e2e.Message(
            imageMessage=e2e.ImageMessage(caption=message.caption, viewOnce=view_once, **common)
        )
    elif isinstance(message, SendVideo):
        built = e2e.Message(
            videoMessage=e2e.VideoMessage(caption=message.caption, viewOnce=view_once, **common)
        )
    elif isinstance(message, SendAudio):
        audio = e2e.AudioMessage(PTT=message.voice, viewOnce=view_once, **common)
        if media.seconds is not None:
            audio.seconds = media.seconds
        if media.waveform is not None:
            audio.waveform = media.waveform
        built = e2e.Message(audioMessage=audio)
    elif isinstance(message, SendSticker):
        built = e2e.Message(
            stickerMessage=e2e.StickerMessage(
                isAnimated=media.animated, width=512, height=512, **common
            )
        )
    else:
        assert isinstance(message, SendDocument)
        name = message.filename or "file"
        document = e2e.DocumentMessage(caption=message.caption, fileName=name, title=name, **common)
        built = e2e.Message(documentMessage=document)
    if view_once:
        return e2e.Message(viewOnceMessage=e2e.FutureProofMessage(message=built))
    return built


def chat_presence(request: Presence) -> tuple[Any, Any]:
    """neonize's (state, media) pair for typing, recording or pausing in a chat."""
    if request.state == "paused":
        return ChatPresence.CHAT_PRESENCE_PAUSED, ChatPresenceMedia.CHAT_PRESENCE_MEDIA_TEXT
    if request.state == "recording":
        return ChatPresence.CHAT_PRESENCE_COMPOSING, ChatPresenceMedia.CHAT_PRESENCE_MEDIA_AUDIO
    return ChatPresence.CHAT_PRESENCE_COMPOSING, ChatPresenceMedia.CHAT_PRESENCE_MEDIA_TEXT


def poll_secret_of(built: Any) -> bytes | None:
    """The secret a built poll carries (None for other messages)."""
    if built.HasField("pollCreationMessage"):
        return bytes(built.messageContextInfo.messageSecret)
    return None


def content_to_remember(built: Any) -> bytes:
    """The engine's copy of a sent message, for later quotes and forwards: its content,
    out of the view-once envelope (which a forward must not keep)."""
    if built.HasField("viewOnceMessage"):
        built = built.viewOnceMessage.message
    return bytes(built.SerializeToString())
