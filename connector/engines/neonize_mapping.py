"""What neonize reports, in wabus's words: pure functions from neonize's protobuf events to the
v1 event models, and from its connection events to a `Closure` (reason, detail, earliest retry).

Connection events are classified by the codes they carry (event type, `ConnectFailureReason`,
`TemporaryBan` code and expiry). Only errors neonize hands over as text alone (a `NeonizeError`
carrying whatsmeow's error string) are classified by whatsmeow's own sentinel messages.

Nothing here does I/O, so every mapping is tested with real neonize protobuf objects. neonize's
objects are untyped to mypy (`Any`); the functions say in their docstrings which type they take.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from connector.engine import EncryptedVote
from connector.engines.neonize_lib import e2e, nz
from connector.reasons import Closure, DisconnectReason
from schemas.commands import non_device_jid
from schemas.envelope import EventData
from schemas.events import (
    CallEnded,
    CallOffered,
    Contact,
    GroupJoined,
    GroupLeft,
    GroupParticipantsChanged,
    GroupSettingsChanged,
    Location,
    Media,
    MessageKind,
    MessageReceipt,
    MessageReceived,
    Poll,
    PresenceChat,
    PresenceUpdate,
    Reaction,
    ReceiptStatus,
)

FIRST_QR_LIFETIME = timedelta(seconds=60)
NEXT_QR_LIFETIME = timedelta(seconds=20)
"""whatsmeow's QR channel shows the first code for 60 s and each refresh for 20 s."""

_WRAPPERS = (
    "ephemeralMessage",
    "viewOnceMessage",
    "viewOnceMessageV2",
    "viewOnceMessageV2Extension",
    "documentWithCaptionMessage",
    "editedMessage",
)
"""Envelopes (FutureProofMessage) around the real content; whatsmeow unwraps most, not all."""

_NOT_CONTENT = frozenset(
    {
        "senderKeyDistributionMessage",
        "fastRatchetKeySenderKeyDistributionMessage",
        "messageContextInfo",
    }
)
"""Fields that ride along with content but are not content themselves."""

_POLLS = ("pollCreationMessage", "pollCreationMessageV2", "pollCreationMessageV3")

_RECEIPT_STATUS = {
    "DELIVERED": ReceiptStatus.DELIVERED,
    "READ": ReceiptStatus.READ,
    "PLAYED": ReceiptStatus.PLAYED,
}
"""Receipts from the other side; `*_SELF`, retries, server errors and the like are not events."""

_FAILURE = nz.ConnectFailureReason
CONNECT_FAILURES: dict[int, DisconnectReason] = {
    _FAILURE.LOGGED_OUT: DisconnectReason.LOGGED_OUT,
    _FAILURE.MAIN_DEVICE_GONE: DisconnectReason.LOGGED_OUT,
    _FAILURE.UNKNOWN_LOGOUT: DisconnectReason.LOGGED_OUT,
    _FAILURE.TEMP_BANNED: DisconnectReason.TEMPORARY_BAN,
    _FAILURE.CLIENT_OUTDATED: DisconnectReason.CLIENT_OUTDATED,
    _FAILURE.BAD_USER_AGENT: DisconnectReason.CLIENT_OUTDATED,
    _FAILURE.GENERIC: DisconnectReason.CONNECT_FAILED,
    _FAILURE.INTERNAL_SERVER_ERROR: DisconnectReason.CONNECT_FAILED,
    _FAILURE.SERVICE_UNAVAILABLE: DisconnectReason.CONNECT_FAILED,
    _FAILURE.EXPERIMENTAL: DisconnectReason.CONNECT_FAILED,
}
"""neonize's `ConnectFailureReason` codes (whatsmeow's 400, 401, … renumbered); logged out as
whatsmeow's `ConnectFailureReason.IsLoggedOut` defines it (401, 403, 406)."""

_CONNECT_ERRORS: tuple[tuple[str, DisconnectReason], ...] = (
    ("failed to dial whatsapp web websocket", DisconnectReason.NETWORK),  # socket.ErrDialFailed
    ("noise handshake failed", DisconnectReason.NETWORK),  # Client.connect's wrapping
)
"""Text fallback: neonize ends a failed connect with `NeonizeError(<Go error text>)` and no code,
so these are the prefixes of whatsmeow's own error values (every dial error is wrapped in
`socket.ErrDialFailed`). Anything else (a database error, a store that cannot be read) is
`unknown`; both are transient."""

_NOT_SENT_ERRORS = (
    "websocket not connected",  # whatsmeow.ErrNotConnected
    "the store doesn't contain a device jid",  # whatsmeow.ErrNotLoggedIn
    "client is nil",  # whatsmeow.ErrClientIsNil: neonize no longer holds the client
)
"""Text fallback: neonize raises `SendMessageError(<Go error text>)` with no code. These are
whatsmeow's errors for a send that stopped before anything left, so retrying cannot duplicate."""


def from_unix(value: int) -> datetime:
    """neonize sends message times in milliseconds and receipt times in seconds; a value past
    1e11 cannot be seconds (that is the year 5138), so both read right."""
    seconds = value / 1000 if value > 100_000_000_000 else value
    return datetime.fromtimestamp(seconds, UTC)


def jid_str(jid: Any) -> str:
    """`user@server` of a neonize `JID`, without the device part, so a sender is one address
    whichever of their devices wrote."""
    user, server = str(jid.User), str(jid.Server)
    return f"{user}@{server}" if user else server


def device_jid_str(jid: Any) -> str:
    """A device's JID as whatsmeow writes it (`user[.agent]:device@server`), the key of its
    store."""
    user, server = str(jid.User), str(jid.Server)
    if jid.RawAgent:
        return f"{user}.{jid.RawAgent}:{jid.Device}@{server}"
    if jid.Device:
        return f"{user}:{jid.Device}@{server}"
    return f"{user}@{server}" if user else server


def parse_device_jid(text: str) -> Any:
    """The neonize `JID` of `device_jid_str`'s output."""
    address, _, server = text.rpartition("@")
    address, _, device = address.partition(":")
    user, _, agent = address.partition(".")
    return nz.JID(
        User=user,
        RawAgent=int(agent or 0),
        Device=int(device or 0),
        Integrator=0,
        Server=server,
        IsEmpty=False,
    )


def unwrap(message: Any) -> Any:
    """The content of a waE2E `Message`, out of ephemeral, view-once, edit and document-with-
    caption envelopes."""
    for _ in range(len(_WRAPPERS)):
        for field in _WRAPPERS:
            if message.HasField(field) and getattr(message, field).HasField("message"):
                message = getattr(message, field).message
                break
        else:
            return message
    return message


def _content_fields(message: Any) -> list[str]:
    return [field.name for field, _ in message.ListFields() if field.name not in _NOT_CONTENT]


def _text_of(message: Any) -> str | None:
    """The text of a text message, or the caption of media."""
    if message.HasField("conversation"):
        return str(message.conversation)
    if message.HasField("extendedTextMessage"):
        return str(message.extendedTextMessage.text)
    for field in ("imageMessage", "videoMessage", "documentMessage"):
        if message.HasField(field) and getattr(message, field).HasField("caption"):
            return str(getattr(message, field).caption)
    return None


def _media(part: Any, **extra: Any) -> Media:
    return Media(
        mimetype=str(part.mimetype) or None,
        size=int(part.fileLength) or None,
        sha256=bytes(part.fileSHA256).hex() or None,
        **extra,
    )


@dataclass(frozen=True)
class _Content:
    kind: MessageKind
    fields: dict[str, Any]
    context: Any = None


def _content(message: Any) -> _Content | None:
    """Kind, kind-specific fields and ContextInfo of unwrapped content; None when the message
    carries no chat content (key distribution, history sync and other protocol traffic)."""
    present = _content_fields(message)
    if not present:
        return None
    if message.HasField("protocolMessage"):
        protocol = message.protocolMessage
        target = {"target_message_id": str(protocol.key.ID)}
        if protocol.type == e2e.ProtocolMessage.REVOKE:
            return _Content(MessageKind.REVOKE, target)
        if protocol.type == e2e.ProtocolMessage.MESSAGE_EDIT:
            return _Content(MessageKind.EDIT, {**target, "text": _text_of(protocol.editedMessage)})
        return None
    if message.HasField("reactionMessage"):
        reaction = message.reactionMessage
        target_id = str(reaction.key.ID)
        emoji = Reaction(target_message_id=target_id, emoji=str(reaction.text))
        return _Content(MessageKind.REACTION, {"reaction": emoji, "target_message_id": target_id})
    for field in _POLLS:
        if message.HasField(field):
            poll = getattr(message, field)
            details = Poll(
                question=str(poll.name),
                options=[str(option.optionName) for option in poll.options],
                selectable_count=int(poll.selectableOptionsCount),
            )
            return _Content(MessageKind.POLL, {"poll": details}, poll.contextInfo)
    if message.HasField("imageMessage"):
        image = message.imageMessage
        fields: dict[str, Any] = {"media": _media(image), "text": _text_of(message)}
        return _Content(MessageKind.IMAGE, fields, image.contextInfo)
    for field in ("videoMessage", "ptvMessage"):
        if message.HasField(field):
            video = getattr(message, field)
            media = _media(video, seconds=int(video.seconds) or None)
            return _Content(
                MessageKind.VIDEO, {"media": media, "text": _text_of(message)}, video.contextInfo
            )
    if message.HasField("audioMessage"):
        audio = message.audioMessage
        media = _media(audio, seconds=int(audio.seconds) or None, voice=bool(audio.PTT))
        return _Content(MessageKind.AUDIO, {"media": media}, audio.contextInfo)
    if message.HasField("documentMessage"):
        document = message.documentMessage
        media = _media(document, filename=str(document.fileName) or None)
        return _Content(
            MessageKind.DOCUMENT, {"media": media, "text": _text_of(message)}, document.contextInfo
        )
    if message.HasField("stickerMessage"):
        sticker = message.stickerMessage
        media = _media(sticker, animated=bool(sticker.isAnimated))
        return _Content(MessageKind.STICKER, {"media": media}, sticker.contextInfo)
    if message.HasField("locationMessage"):
        place = message.locationMessage
        location = Location(
            latitude=float(place.degreesLatitude),
            longitude=float(place.degreesLongitude),
            name=str(place.name) or None,
            address=str(place.address) or None,
        )
        return _Content(MessageKind.LOCATION, {"location": location}, place.contextInfo)
    if message.HasField("liveLocationMessage"):
        live = message.liveLocationMessage
        location = Location(
            latitude=float(live.degreesLatitude), longitude=float(live.degreesLongitude)
        )
        live_fields: dict[str, Any] = {"location": location, "text": str(live.caption) or None}
        return _Content(MessageKind.LOCATION, live_fields, live.contextInfo)
    if message.HasField("contactMessage"):
        card = message.contactMessage
        contact = Contact(display_name=str(card.displayName), vcard=str(card.vcard))
        cards_seen = {"contact": contact, "contacts": [contact]}
        return _Content(MessageKind.CONTACT, cards_seen, card.contextInfo)
    if message.HasField("contactsArrayMessage"):
        cards = message.contactsArrayMessage
        # Several vCards concatenated are one valid vCard file.
        vcard = "\n".join(str(card.vcard) for card in cards.contacts)
        contact = Contact(display_name=str(cards.displayName), vcard=vcard)
        each = [
            Contact(display_name=str(card.displayName), vcard=str(card.vcard))
            for card in cards.contacts
        ]
        return _Content(
            MessageKind.CONTACT, {"contact": contact, "contacts": each}, cards.contextInfo
        )
    if message.HasField("conversation"):
        return _Content(MessageKind.TEXT, {"text": str(message.conversation)})
    if message.HasField("extendedTextMessage"):
        extended = message.extendedTextMessage
        return _Content(MessageKind.TEXT, {"text": str(extended.text)}, extended.contextInfo)
    return _Content(MessageKind.UNKNOWN, {})


def message_received(event: Any) -> MessageReceived | None:
    """A neonize `MessageEv` (`Neonize_pb2.Message`) as `message.received`; None for protocol
    traffic that is not a chat message."""
    content = _content(unwrap(event.Message))
    if content is None:
        return None
    info = event.Info
    source = info.MessageSource
    context = content.context
    quoted = str(context.stanzaID) if context is not None and context.stanzaID else None
    mentions = [str(jid) for jid in context.mentionedJID] if context is not None else []
    forwarded = bool(context.isForwarded) if context is not None else False
    return MessageReceived(
        message_id=str(info.ID),
        chat=jid_str(source.Chat),
        from_=jid_str(source.Sender),
        from_alt=jid_str(source.SenderAlt) if source.SenderAlt.User else None,
        from_me=bool(source.IsFromMe),
        type=content.kind,
        timestamp=from_unix(int(info.Timestamp)),
        push_name=str(info.Pushname) or None,
        is_group=bool(source.IsGroup),
        quoted_message_id=quoted,
        mentions=mentions,
        view_once=view_once(event.Message),
        forwarded=forwarded,
        **content.fields,
    )


_VIEW_ONCE_WRAPPERS = ("viewOnceMessage", "viewOnceMessageV2", "viewOnceMessageV2Extension")


def view_once(message: Any) -> bool:
    """Whether a waE2E `Message` is view-once: wrapped as such, or its media flagged."""
    if any(message.HasField(wrapper) for wrapper in _VIEW_ONCE_WRAPPERS):
        return True
    content = unwrap(message)
    return any(
        content.HasField(part) and bool(getattr(content, part).viewOnce)
        for part in ("imageMessage", "videoMessage", "audioMessage")
    )


def poll_vote(event: Any) -> EncryptedVote | None:
    """A neonize `MessageEv` carrying a poll vote, still encrypted; None for other messages.

    The vote's key names the poll from the voter's side, so the poll's author is (as in
    whatsmeow's `getOrigSenderFromKey`) the voter when the key says `fromMe`, else the key's
    `remoteJID` in a one-to-one chat and its `participant` in a group."""
    message = unwrap(event.Message)
    if not message.HasField("pollUpdateMessage"):
        return None
    update = message.pollUpdateMessage
    key = update.pollCreationMessageKey
    info = event.Info
    source = info.MessageSource
    voter = jid_str(source.Sender)
    if key.fromMe:
        poll_sender = voter
    elif str(source.Chat.Server) in {"s.whatsapp.net", "lid"}:
        poll_sender = non_device_jid(str(key.remoteJID))
    else:
        poll_sender = non_device_jid(str(key.participant))
    return EncryptedVote(
        message_id=str(info.ID),
        chat=jid_str(source.Chat),
        voter=voter,
        poll_id=str(key.ID),
        poll_sender=poll_sender,
        enc_payload=bytes(update.vote.encPayload),
        enc_iv=bytes(update.vote.encIV),
        timestamp=from_unix(int(info.Timestamp)),
    )


def to_remember(event: Any) -> tuple[bytes, bytes | None]:
    """The engine's copy of a received message (its content, out of every envelope) and, for
    a poll, the secret its votes are encrypted with."""
    content = unwrap(event.Message)
    secret = None
    if any(content.HasField(field) for field in _POLLS):
        secret = bytes(event.Message.messageContextInfo.messageSecret) or None
        if secret is None and content.HasField("messageContextInfo"):
            secret = bytes(content.messageContextInfo.messageSecret) or None
    return bytes(content.SerializeToString()), secret


_MEDIA_PARTS = (
    "imageMessage",
    "videoMessage",
    "ptvMessage",
    "audioMessage",
    "documentMessage",
    "stickerMessage",
)


def downloadable(event: Any) -> tuple[Any, int] | None:
    """The unwrapped waE2E `Message` to hand to `download_any` and its announced size in bytes,
    when the event carries media that can be fetched."""
    message = unwrap(event.Message)
    for field in _MEDIA_PARTS:
        if message.HasField(field):
            part = getattr(message, field)
            return (message, int(part.fileLength)) if part.directPath or part.URL else None
    return None


def receipt(event: Any) -> MessageReceipt | None:
    """A neonize `ReceiptEv` as `message.receipt`; None for receipts that are not the other
    side's delivered/read/played (our own devices' reads, retries, server errors)."""
    status = _RECEIPT_STATUS.get(nz.Receipt.ReceiptType.Name(event.Type))
    if status is None or not event.MessageIDs:
        return None
    source = event.MessageSource
    return MessageReceipt(
        message_ids=[str(message_id) for message_id in event.MessageIDs],
        chat=jid_str(source.Chat),
        from_=jid_str(source.Sender) if source.Sender.User else None,
        status=status,
        timestamp=from_unix(int(event.Timestamp)),
    )


def chat_presence(event: Any) -> PresenceChat:
    """A neonize `ChatPresenceEv` as `presence.chat` (`composing`, `recording` or `paused`)."""
    source = event.MessageSource
    if event.State == nz.ChatPresence.PAUSED:
        state = "paused"
    elif event.Media == nz.ChatPresence.AUDIO:
        state = "recording"
    else:
        state = "composing"
    return PresenceChat(chat=jid_str(source.Chat), from_=jid_str(source.Sender), state=state)


def _seconds(value: int) -> datetime | None:
    """A time neonize sends as Unix seconds; None for Go's zero time (a negative number) and 0,
    which whatsmeow uses for "not said"."""
    return from_unix(value) if value > 0 else None


def _jid_or_none(parent: Any, field: str) -> str | None:
    """`jid_str` of an optional JID field, None when it is unset or empty."""
    if not parent.HasField(field):
        return None
    value = getattr(parent, field)
    return jid_str(value) if value.User else None


_PARTICIPANT_ACTIONS = (
    ("add", "Join"),
    ("remove", "Leave"),
    ("promote", "Promote"),
    ("demote", "Demote"),
)
"""whatsmeow's `GroupInfo` lists (its `add`/`remove`/`promote`/`demote` changes) by action."""


def group_changes(event: Any, own: Collection[str] = ()) -> list[EventData]:
    """A neonize `GroupInfoEv` (`Neonize_pb2.GroupInfoEvent`): `group.participants` per
    non-empty list of people added, removed, promoted or demoted, `group.settings` with what of
    the name, description, announce and locked settings changed. The account itself (any of
    its addresses in `own`) added is `group.joined`, removed is `group.left`, instead of being
    one of the participants; a deleted group is `group.left` too."""
    group = jid_str(event.JID)
    by = _jid_or_none(event, "Sender")
    found: list[EventData] = []
    left = False
    for action, field in _PARTICIPANT_ACTIONS:
        people = [jid_str(jid) for jid in getattr(event, field)]
        us = action in {"add", "remove"} and any(person in own for person in people)
        others = [person for person in people if not (us and person in own)]
        if us and action == "add":
            name = str(event.Name.Name) if event.HasField("Name") else ""
            found.append(GroupJoined(group=group, name=name or None, by=by))
        if others:
            found.append(
                GroupParticipantsChanged(group=group, action=action, participants=others, by=by)
            )
        if us and action == "remove":
            found.append(GroupLeft(group=group, by=by))
            left = True
    settings = group_settings(event)
    if settings:
        found.append(GroupSettingsChanged(group=group, by=by, **settings))
    if event.HasField("Delete") and event.Delete.Deleted and not left:
        found.append(GroupLeft(group=group, by=by))
    return found


def group_settings(event: Any) -> dict[str, Any]:
    """What of a group's name, description, announce-only and locked settings a `GroupInfoEv`
    changed (a deleted description is an empty one)."""
    changed: dict[str, Any] = {}
    if event.HasField("Name"):
        changed["name"] = str(event.Name.Name)
    if event.HasField("Topic"):
        topic = event.Topic
        changed["description"] = "" if topic.TopicDeleted else str(topic.Topic)
    if event.HasField("Announce"):
        changed["announce"] = bool(event.Announce.IsAnnounce)
    if event.HasField("Locked"):
        changed["locked"] = bool(event.Locked.isLocked)
    return changed


def joined_group(event: Any) -> GroupJoined:
    """A neonize `JoinedGroupEv` (the account created, was added to or joined a group) as
    `group.joined`. neonize 0.5.2 does not pass whatsmeow's `Sender` on, so `by` is set only
    when a later neonize does."""
    info = event.GroupInfo
    return GroupJoined(
        group=jid_str(info.JID),
        name=str(info.GroupName.Name) or None,
        by=_jid_or_none(event, "Sender"),
    )


def presence_update(event: Any) -> PresenceUpdate:
    """A neonize `PresenceEv` (of a subscribed contact) as `presence.update`: online, or offline
    with the last-seen time when the contact shares it."""
    online = not event.Unavailable
    return PresenceUpdate(
        jid=jid_str(event.From),
        online=online,
        last_seen=None if online else _seconds(int(event.LastSeen)),
    )


def _caller(meta: Any) -> str:
    """Who calls: whatsmeow's `CallCreator`, else the stanza's sender (without its device)."""
    return jid_str(meta.callCreator if meta.callCreator.User else getattr(meta, "from"))


def _call_time(meta: Any) -> datetime:
    return from_unix(max(int(meta.timestamp), 0))


def _attribute(node: Any, name: str) -> str | None:
    """A `Node` attribute as text (a JID attribute as `jid_str`), None when absent or empty."""
    for attribute in node.Attrs:
        if attribute.name != name:
            continue
        kind = attribute.WhichOneof("Value")
        if kind == "jid":
            return jid_str(attribute.jid) if attribute.jid.User else None
        if kind is not None:
            return str(getattr(attribute, kind)) or None
    return None


def call_offered(event: Any) -> CallOffered:
    """A neonize `CallOfferEv` as `call.offer`. whatsmeow parses no media or group flags, so they
    are read from the offer node it passes along: a `video` child is a video call, a `group-jid`
    attribute, `type="group"` or a `group_info` child a group call."""
    meta = event.basicCallMeta
    offer = event.data
    children = {str(child.Tag) for child in offer.Nodes}
    group = (
        _attribute(offer, "group-jid") is not None
        or _attribute(offer, "type") == "group"
        or "group_info" in children
    )
    return CallOffered(
        call_id=str(meta.callID),
        from_=_caller(meta),
        video="video" in children,
        group=group,
        timestamp=_call_time(meta),
    )


def call_offer_notice(event: Any) -> CallOffered:
    """A neonize `CallOfferNoticeEv` (whatsmeow's notice of a group call) as `call.offer`."""
    meta = event.basicCallMeta
    return CallOffered(
        call_id=str(meta.callID),
        from_=_caller(meta),
        video=str(event.media) == "video",
        group=str(event.type) == "group" or _attribute(event.data, "group-jid") is not None,
        timestamp=_call_time(meta),
    )


def call_ended(event: Any) -> CallEnded:
    """A neonize `CallTerminateEv` as `call.ended`, with WhatsApp's reason as it came."""
    meta = event.basicCallMeta
    return CallEnded(
        call_id=str(meta.callID),
        from_=_caller(meta),
        reason=str(event.reason) or None,
        timestamp=_call_time(meta),
    )


def inbound(event: Any, own: Collection[str] = ()) -> list[tuple[EventData, str | None]]:
    """Every event wabus publishes for a neonize event, each with its source id (WhatsApp's id
    for it, which fixes the envelope id so a redelivery is deduplicated: a message's id, a
    call's id); empty for events wabus does not publish. `own` holds the account's addresses
    (phone JID, LID), to tell the account joining or leaving a group from other people."""
    if isinstance(event, nz.Message):
        received = message_received(event)
        return [(received, received.message_id)] if received is not None else []
    if isinstance(event, nz.Receipt):
        mapped = receipt(event)
        return [(mapped, None)] if mapped is not None else []
    if isinstance(event, nz.ChatPresence):
        return [(chat_presence(event), None)]
    if isinstance(event, nz.Presence):
        return [(presence_update(event), None)]
    if isinstance(event, nz.GroupInfoEvent):
        return [(data, None) for data in group_changes(event, own)]
    if isinstance(event, nz.JoinedGroup):
        return [(joined_group(event), None)]
    call: CallOffered | CallEnded | None = None
    if isinstance(event, nz.CallOffer):
        call = call_offered(event)
    elif isinstance(event, nz.CallOfferNotice):
        call = call_offer_notice(event)
    elif isinstance(event, nz.CallTerminate):
        call = call_ended(event)
    return [(call, call.call_id)] if call is not None else []


def close_reason(event: Any, now: datetime) -> Closure | None:
    """Why a neonize connection event (received at `now`) ends the connection; None for events
    that do not."""
    if isinstance(event, nz.Disconnected):
        return Closure(DisconnectReason.NETWORK, "connection dropped")
    if isinstance(event, nz.LoggedOut):
        cause = _failure_name(event.Reason) if event.HasField("Reason") else "unlinked"
        return Closure(DisconnectReason.LOGGED_OUT, f"logged out by WhatsApp ({cause})")
    if isinstance(event, nz.StreamReplaced):
        return Closure(DisconnectReason.STREAM_REPLACED, "another client opened this session")
    if isinstance(event, nz.TemporaryBan):
        return temporary_ban(event, now)
    if isinstance(event, nz.ClientOutdated):
        return Closure(DisconnectReason.CLIENT_OUTDATED, "WhatsApp refused this client version")
    if isinstance(event, nz.ConnectFailure):
        code = int(event.Reason) if event.HasField("Reason") else 0
        detail = f"connect failure {_failure_name(code)}"
        if event.Message:
            detail += f": {event.Message}"
        return Closure(CONNECT_FAILURES.get(code, DisconnectReason.CONNECT_FAILED), detail)
    if isinstance(event, nz.StreamError):
        return Closure(DisconnectReason.UNKNOWN, f"stream error {event.Code}")
    return None


def temporary_ban(event: Any, now: datetime) -> Closure:
    """A neonize `TemporaryBanEv`: whatsmeow's `Expire` is the ban's remaining duration in
    seconds when WhatsApp sent it (0 when it did not say), so its end is `now` plus that."""
    code = (
        nz.TemporaryBan.TempBanReason.Name(event.Code)
        if event.HasField("Code") and event.Code in nz.TemporaryBan.TempBanReason.values()
        else "unknown reason"
    )
    seconds = int(event.Expire)
    if seconds <= 0:
        return Closure(DisconnectReason.TEMPORARY_BAN, f"temporary ban ({code}), end not given")
    ends = now + timedelta(seconds=seconds)
    detail = f"temporary ban ({code}) until {ends.isoformat(timespec='seconds')}"
    return Closure(DisconnectReason.TEMPORARY_BAN, detail, not_before=ends)


def _failure_name(code: int) -> str:
    if code not in _FAILURE.values():
        return "UNKNOWN"
    return str(_FAILURE.Name(code))


def connect_error_reason(error: str) -> DisconnectReason:
    """The reason for the error text a neonize connect ended with (see `_CONNECT_ERRORS`)."""
    text = error.lower()
    for prefix, reason in _CONNECT_ERRORS:
        if text.startswith(prefix):
            return reason
    return DisconnectReason.UNKNOWN


def surely_not_sent(error: str) -> bool:
    """Whether a failed send's error text (neonize gives no code) is one whatsmeow raises before
    anything left, so that sending again cannot deliver the message twice."""
    text = error.lower()
    return any(mark in text for mark in _NOT_SENT_ERRORS)


def login_status_reason(status: str) -> Closure | None:
    """What an event of whatsmeow's QR channel means for the session; None for `success`. The
    channel's results are whatsmeow's fixed words (`QRChannelTimeout` and the others)."""
    if status == "success":
        return None
    if status == "timeout":
        return Closure(
            DisconnectReason.QR_EXHAUSTED, "nobody scanned the QR codes WhatsApp offered"
        )
    if status == "err-client-outdated":
        return Closure(DisconnectReason.CLIENT_OUTDATED, "WhatsApp refused this client version")
    return Closure(DisconnectReason.UNKNOWN, f"pairing ended: {status}")


def qr_expires_at(refresh: int, now: datetime) -> datetime:
    """When QR code number `refresh` (0 for the first) of a connection stops being valid."""
    return now + (FIRST_QR_LIFETIME if refresh == 0 else NEXT_QR_LIFETIME)
