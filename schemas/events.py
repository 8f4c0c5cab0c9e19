"""Event types of version 1, one model each, documented by when they are emitted.

The envelope's `type` selects the model of its `data`; `EVENT_MODELS` is that mapping.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from schemas.envelope import ContractModel, EventData, Timestamp


class ConnectionQR(EventData):
    """Emitted each time WhatsApp offers a (new) QR code for pairing, valid until `expires_at`."""

    event_type = "connection.qr"
    qr: str = Field(description="The raw QR payload (`2@…`); render it, do not parse it.")
    expires_at: Timestamp
    refresh: int = Field(ge=0, description="0 for the first code, then 1, 2, … per refresh.")


class ConnectionConnecting(EventData):
    """Emitted when the connector starts (or restarts) connecting a session."""

    event_type = "connection.connecting"
    attempt: int = Field(default=0, ge=0)


class ConnectionPairCode(EventData):
    """Emitted when WhatsApp issued a phone pairing code: type it on the phone to link it."""

    event_type = "connection.pair_code"
    code: str
    phone: str
    expires_at: Timestamp | None = None


class ConnectionOpen(EventData):
    """Emitted when the session is connected and logged in."""

    event_type = "connection.open"
    jid: str | None = None
    phone: str | None = None
    push_name: str | None = None


class ConnectionClose(EventData):
    """Emitted when the connection dropped; `will_reconnect` tells whether wabus retries."""

    event_type = "connection.close"
    reason: str
    will_reconnect: bool
    attempt: int = Field(default=0, ge=0)
    retry_at: Timestamp | None = None


class ConnectionLoggedOut(EventData):
    """Emitted when WhatsApp ended the session; the device must be paired again."""

    event_type = "connection.logged_out"
    reason: str


class ConnectionFailed(EventData):
    """Emitted when the connector gave up on a session (`code` says why); it stays down until
    the instance is changed or recreated."""

    event_type = "connection.failed"
    code: str
    reason: str


class MessageKind(StrEnum):
    TEXT = "text"
    IMAGE = "image"
    VIDEO = "video"
    AUDIO = "audio"
    DOCUMENT = "document"
    STICKER = "sticker"
    LOCATION = "location"
    CONTACT = "contact"
    REACTION = "reaction"
    POLL = "poll"
    EDIT = "edit"
    """A new text for an earlier message: `target_message_id` names it, `text` is the new text."""
    REVOKE = "revoke"
    """An earlier message deleted for everyone: `target_message_id` names it."""
    UNKNOWN = "unknown"


class Media(ContractModel):
    """An inbound attachment; `id` names it in the media store once downloaded."""

    id: str | None = None
    mimetype: str | None = None
    size: int | None = Field(default=None, ge=0)
    sha256: str | None = None
    filename: str | None = None
    seconds: int | None = Field(default=None, ge=0, description="Duration of audio and video.")
    voice: bool = Field(default=False, description="Audio recorded as a voice note (push-to-talk).")
    animated: bool = Field(default=False, description="An animated sticker.")


class Location(ContractModel):
    latitude: float
    longitude: float
    name: str | None = None
    address: str | None = None


class Contact(ContractModel):
    display_name: str
    vcard: str


class Reaction(ContractModel):
    target_message_id: str
    emoji: str = Field(description="Empty when the reaction was removed.")


class Poll(ContractModel):
    question: str
    options: list[str]
    selectable_count: int = Field(ge=0)


class MessageReceived(EventData):
    """Emitted for every message in a chat of the instance, including ones sent from the phone.

    `text` holds the body of a text message or the caption of media; kind-specific details sit in
    the one field named after the kind (`media`, `location`, `contact`, `reaction`, `poll`).
    """

    event_type = "message.received"
    message_id: str
    chat: str = Field(description="JID of the chat (a person or a group).")
    from_: str = Field(alias="from", description="JID of the sender.")
    from_alt: str | None = Field(
        default=None,
        description="The sender's other address: the phone-number JID when `from` is a LID "
        "(`…@lid`), the LID when it is a phone number; null when WhatsApp did not say.",
    )
    from_me: bool
    type: MessageKind
    text: str | None = None
    timestamp: Timestamp
    push_name: str | None = None
    is_group: bool = False
    quoted_message_id: str | None = None
    target_message_id: str | None = Field(
        default=None, description="For `edit` and `revoke`: the message edited or deleted."
    )
    mentions: list[str] = Field(default_factory=list)
    view_once: bool = Field(default=False, description="Media to be shown (or played) once.")
    forwarded: bool = False
    media: Media | None = None
    location: Location | None = None
    contact: Contact | None = Field(
        default=None,
        description="A contact card; for several cards in one message, the first one's name "
        "and all vCards in one (`contacts` lists them one by one).",
    )
    contacts: list[Contact] = Field(default_factory=list, description="Every contact card.")
    reaction: Reaction | None = None
    poll: Poll | None = None


class PollVote(EventData):
    """Emitted when someone voted in a poll (or changed or took back their vote).

    Votes are end-to-end encrypted with a secret of the poll; the connector keeps the secret and
    the options of every poll it saw (sent or received) for `WABUS_MESSAGE_MEMORY_DAYS`, across
    restarts. `selected` holds the chosen option names in the poll's order (empty: the vote was
    taken back); it is null, and `decrypted` false, for a poll the connector does not know."""

    event_type = "poll.vote"
    message_id: str = Field(description="WhatsApp's id of the vote itself.")
    poll_id: str = Field(description="The poll's message id.")
    chat: str
    from_: str = Field(alias="from", description="JID of the voter.")
    decrypted: bool
    selected: list[str] | None = None
    timestamp: Timestamp


class MessageSent(EventData):
    """Emitted when WhatsApp accepted a send command; `message_id` is WhatsApp's id for it."""

    event_type = "message.sent"
    command_id: str
    message_id: str
    to: str
    chat: str
    timestamp: Timestamp


class MessageFailed(EventData):
    """Emitted when a command could not be carried out — a send, or any other command
    (`invalid_command`, `unknown_instance`, `instance_not_connected`, `redelivery_exhausted`
    answer every kind); `code` is stable, `reason` is prose. `command_id` is the command's id as
    it arrived, even one that could not be used (then it was never stored)."""

    event_type = "message.failed"
    command_id: str
    to: str | None = None
    code: str
    reason: str
    retryable: bool = False


class ReceiptStatus(StrEnum):
    """Receipt states in their monotonic order: a receiver keeps the highest it has seen."""

    DELIVERED = "delivered"
    READ = "read"
    PLAYED = "played"


class MessageReceipt(EventData):
    """Emitted when messages were delivered to, read or played by the other side."""

    event_type = "message.receipt"
    message_ids: list[str] = Field(min_length=1)
    chat: str
    from_: str | None = Field(default=None, alias="from")
    status: ReceiptStatus
    timestamp: Timestamp


class PresenceChat(EventData):
    """Emitted when someone starts or stops typing or recording in a chat."""

    event_type = "presence.chat"
    chat: str
    from_: str = Field(alias="from")
    state: str = Field(description="`composing`, `recording` or `paused`.")


class GroupJoined(EventData):
    """Emitted when the account was added to a group or joined one (also one it created)."""

    event_type = "group.joined"
    group: str
    name: str | None = None
    by: str | None = Field(default=None, description="Who added the account, when known.")


class GroupLeft(EventData):
    """Emitted when the account left a group or was removed from it."""

    event_type = "group.left"
    group: str
    by: str | None = None


class GroupParticipantsChanged(EventData):
    """Emitted when people joined, left, were added, removed, promoted or demoted."""

    event_type = "group.participants"
    group: str
    action: str = Field(description="`add`, `remove`, `promote` or `demote`.")
    participants: list[str]
    by: str | None = Field(default=None, description="Who did it, when known.")


class GroupSettingsChanged(EventData):
    """Emitted when a group's name, description, announce-only or locked setting changed;
    only what changed is set."""

    event_type = "group.settings"
    group: str
    by: str | None = None
    name: str | None = None
    description: str | None = None
    announce: bool | None = None
    locked: bool | None = None


class PresenceUpdate(EventData):
    """Emitted for a contact whose presence is subscribed (`presence_subscribe`): online, or
    offline with when they were last seen (when they share it)."""

    event_type = "presence.update"
    jid: str
    online: bool
    last_seen: Timestamp | None = None


class CallOffered(EventData):
    """Emitted when someone calls the account; `rejected` when the instance's `calls` setting
    rejected it at once."""

    event_type = "call.offer"
    call_id: str
    from_: str = Field(alias="from")
    video: bool = False
    group: bool = False
    timestamp: Timestamp
    rejected: bool = False


class CallEnded(EventData):
    """Emitted when a call ended (hung up, missed or rejected)."""

    event_type = "call.ended"
    call_id: str
    from_: str = Field(alias="from")
    reason: str | None = None
    timestamp: Timestamp


class WebhookEndpointDisabled(EventData):
    """Emitted by the relay when an endpoint answered 410 Gone and was disabled."""

    event_type = "webhook.endpoint_disabled"
    endpoint_id: str
    url: str
    status: int


EVENT_MODELS: dict[str, type[EventData]] = {
    model.event_type: model
    for model in (
        ConnectionConnecting,
        ConnectionQR,
        ConnectionPairCode,
        ConnectionOpen,
        ConnectionClose,
        ConnectionLoggedOut,
        ConnectionFailed,
        MessageReceived,
        PollVote,
        MessageSent,
        MessageFailed,
        MessageReceipt,
        PresenceChat,
        PresenceUpdate,
        GroupJoined,
        GroupLeft,
        GroupParticipantsChanged,
        GroupSettingsChanged,
        CallOffered,
        CallEnded,
        WebhookEndpointDisabled,
    )
}
