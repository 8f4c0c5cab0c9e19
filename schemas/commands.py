"""Commands the connector executes, published on `<prefix>.cmd.<instance>.<command>` in an
envelope whose `type` is the command name and whose `id` is the command id.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    field_validator,
    model_validator,
)

from schemas.envelope import ContractModel
from schemas.ids import MessageId
from schemas.instances import check_http_url

SEND_COMMAND = "send"
PAIR_PHONE_COMMAND = "pair_phone"
LOGOUT_COMMAND = "logout"
MARK_READ_COMMAND = "read"
PRESENCE_COMMAND = "presence"

_JID = re.compile(r"^[0-9A-Za-z.:_-]+@(s\.whatsapp\.net|g\.us|lid|newsletter|broadcast)$")
_PHONE_DECORATION = re.compile(r"[\s()+.-]")

MAX_MEDIA_BYTES = 16 * 1024 * 1024
"""WhatsApp's limit for images, audio and video; documents may be larger but are capped here too."""
MAX_THUMBNAIL_BYTES = 256 * 1024
"""A link preview's thumbnail (JPEG) given by the caller."""
POLL_OPTIONS_MIN, POLL_OPTIONS_MAX = 2, 12
"""WhatsApp shows polls of 2 to 12 options."""
MAX_CONTACT_CARDS = 20
MAX_RECIPIENT_CHARS = 256
"""Far above any JID or decorated number: the bound keeps the regexes cheap on hostile input."""
_MIME_PART = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
MIMETYPE_PATTERN = rf"^{_MIME_PART}/{_MIME_PART}(;[ A-Za-z0-9=._-]{{1,64}})?$"


def _phone_digits(value: str) -> str | None:
    """The digits of a decorated phone number, or None. ASCII only: `str.isdigit` also
    accepts Arabic-Indic, fullwidth and superscript digits, which no WhatsApp JID contains."""
    digits = _PHONE_DECORATION.sub("", value.strip())
    if digits.isascii() and digits.isdigit() and 6 <= len(digits) <= 20:
        return digits
    return None


def normalise_recipient(value: str) -> str:
    """Accept a JID as is, or a phone number with the usual decoration, returned as digits."""
    value = value.strip()
    if len(value) > MAX_RECIPIENT_CHARS:
        raise ValueError(f"expected a phone number or a JID, got {len(value)} characters")
    if "@" in value:
        if not _JID.fullmatch(value):
            raise ValueError("not a WhatsApp JID (…@s.whatsapp.net, …@g.us, …@lid)")
        return value
    digits = _phone_digits(value)
    if digits is None:
        raise ValueError(
            "expected a phone number in international format (6-20 ASCII digits 0-9, "
            "optionally decorated with + ( ) - . and spaces) or a JID"
        )
    return digits


USER_SERVER = "s.whatsapp.net"


def jid_string(address: str) -> str:
    """The JID of a normalised recipient: a phone number (digits) is `<digits>@s.whatsapp.net`,
    a JID stays as it is."""
    return address if "@" in address else f"{address}@{USER_SERVER}"


def non_device_jid(jid: str) -> str:
    """`user@server` of a JID that may name a device (`user:device@server`,
    `user.agent:device@server`), as whatsmeow's `ToNonAD()`: one address for a person whichever
    of their devices wrote."""
    user, at, server = jid.rpartition("@")
    if not at:
        return jid
    return f"{user.partition('.')[0].partition(':')[0]}@{server}"


Recipient = Annotated[str, AfterValidator(normalise_recipient)]
"""A phone number (returned as digits) or a JID."""


def normalise_phone(value: str) -> str:
    """A phone number as ASCII digits; the decoration people type (`+55 (11) 9…`) is dropped."""
    digits = _phone_digits(value) if len(value) <= MAX_RECIPIENT_CHARS else None
    if digits is None:
        raise ValueError(
            "expected a phone number in international format (6-20 ASCII digits 0-9, "
            "optionally decorated with + ( ) - . and spaces)"
        )
    return digits


def check_base64_media(value: str) -> str:
    """Inline media must decode, strictly, to 1 byte … `MAX_MEDIA_BYTES`: refused here, a bad
    payload never reaches `WA_COMMANDS` (the connector decodes it the same way)."""
    try:
        size = len(base64.b64decode(value, validate=True))
    except (binascii.Error, ValueError) as error:
        raise ValueError(
            "expected standard base64 (A-Z a-z 0-9 + /, `=` padding; no whitespace, no "
            f"`data:` prefix): {error}"
        ) from error
    if not 1 <= size <= MAX_MEDIA_BYTES:
        raise ValueError(f"expected 1 to {MAX_MEDIA_BYTES} bytes of media, got {size}")
    return value


class Quoted(ContractModel):
    """What a reply shows of the message it quotes, for a message the connector has not seen
    (WhatsApp renders a quote from the quoted message's sender and content, not from its id)."""

    sender: Recipient = Field(description="Phone number or JID of the quoted message's author.")
    text: str | None = Field(default=None, max_length=4096, description="Its text or caption.")


class _Send(ContractModel):
    """Fields every kind of send shares."""

    to: str = Field(description="Phone number in international format (digits) or a JID.")
    reply_to: MessageId | None = Field(
        default=None,
        description="WhatsApp id of a message in the chat to quote. The quote shows the message "
        "as the connector saw it; for one it has not seen, give `quoted`.",
    )
    quoted: Quoted | None = Field(
        default=None, description="Sender and text of the `reply_to` message, when given."
    )
    mentions: list[Recipient] = Field(
        default_factory=list, max_length=256, description="Phone numbers or JIDs to mention."
    )
    mention_all: bool = Field(
        default=False,
        description="In a group: mention every participant but the account sending (each is "
        "notified; the text need not name them).",
    )

    @field_validator("to")
    @classmethod
    def _recipient(cls, value: str) -> str:
        return normalise_recipient(value)

    @model_validator(mode="after")
    def _quote_needs_reply_to(self) -> _Send:
        if self.quoted is not None and self.reply_to is None:
            raise ValueError("`quoted` describes the `reply_to` message: give `reply_to` too")
        if self.mention_all and not self.to.endswith("@g.us"):
            raise ValueError("`mention_all` needs a group as `to` (`<digits>@g.us`)")
        return self


def check_thumbnail(value: str) -> str:
    """A caller's thumbnail: strict base64 of 1 byte … `MAX_THUMBNAIL_BYTES`."""
    try:
        size = len(base64.b64decode(value, validate=True))
    except (binascii.Error, ValueError) as error:
        raise ValueError(f"expected standard base64 of a JPEG: {error}") from error
    if not 1 <= size <= MAX_THUMBNAIL_BYTES:
        raise ValueError(f"expected 1 to {MAX_THUMBNAIL_BYTES} bytes of JPEG, got {size}")
    return value


class LinkPreview(ContractModel):
    """A link preview given by the caller, shown as is (nothing is fetched)."""

    url: str = Field(max_length=4096, description="The link the preview is for (in the text).")
    title: str | None = Field(default=None, max_length=256)
    description: str | None = Field(default=None, max_length=1024)
    thumbnail_base64: str | None = Field(
        default=None,
        max_length=(MAX_THUMBNAIL_BYTES * 4) // 3 + 4,
        description=f"A JPEG thumbnail, base64, at most {MAX_THUMBNAIL_BYTES} bytes.",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_http_url(value)

    @field_validator("thumbnail_base64")
    @classmethod
    def _thumbnail(cls, value: str | None) -> str | None:
        return None if value is None else check_thumbnail(value)


class SendText(_Send):
    """A text message: `{"to": "<digits or JID>", "text": "…"}` (`type` may be left out)."""

    type: Literal["text"] = "text"
    text: str = Field(min_length=1, max_length=65536)
    link_preview: bool | LinkPreview = Field(
        default=False,
        description="`true`: the connector fetches a preview of the first link in `text` "
        "(title, description, thumbnail; through the SSRF guard, 5 s and size caps; no preview "
        "when that fails); an object: this preview, nothing fetched.",
    )


class _MediaSource(_Send):
    """Media from `url` (fetched by the connector, SSRF-checked, size-capped) or inline `base64`."""

    url: str | None = Field(default=None, max_length=4096, pattern=r"^https?://")
    base64: str | None = Field(
        default=None,
        max_length=(MAX_MEDIA_BYTES * 4) // 3 + 4,
        description=f"Standard base64 (no `data:` prefix) of 1 to {MAX_MEDIA_BYTES} bytes.",
    )
    mimetype: str | None = Field(default=None, max_length=255, pattern=MIMETYPE_PATTERN)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else check_http_url(value)

    @field_validator("base64")
    @classmethod
    def _base64(cls, value: str | None) -> str | None:
        return None if value is None else check_base64_media(value)

    @model_validator(mode="after")
    def _one_source(self) -> _MediaSource:
        if (self.url is None) == (self.base64 is None):
            raise ValueError("give exactly one of `url` or `base64`")
        return self


class _SendMedia(_MediaSource):
    caption: str | None = Field(default=None, max_length=4096)


_VIEW_ONCE = Field(default=False, description="Shown once, then gone (view-once).")


class SendImage(_SendMedia):
    type: Literal["image"]
    view_once: bool = _VIEW_ONCE


class SendVideo(_SendMedia):
    type: Literal["video"]
    view_once: bool = _VIEW_ONCE


class SendAudio(_MediaSource):
    """Audio; with `voice` it becomes a voice note: any common format (MP3, WAV, M4A, Ogg…)
    is converted to Ogg/Opus mono 48 kHz with its duration and waveform."""

    type: Literal["audio"]
    voice: bool = Field(default=False, description="Send as a voice note (push-to-talk).")
    view_once: bool = Field(default=False, description="A voice note played once (needs `voice`).")

    @model_validator(mode="after")
    def _view_once_is_voice(self) -> SendAudio:
        if self.view_once and not self.voice:
            raise ValueError("`view_once` audio must be a voice note: set `voice` too")
        return self


class SendDocument(_SendMedia):
    type: Literal["document"]
    filename: str | None = Field(default=None, max_length=255)


class SendSticker(_MediaSource):
    """A sticker from a PNG, JPEG or WebP (fitted into 512x512 WebP); an animated WebP of at
    most 512x512 and 500 KB is sent as it is."""

    type: Literal["sticker"]


class SendLocation(_Send):
    type: Literal["location"]
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)
    name: str | None = Field(default=None, max_length=1024)
    address: str | None = Field(default=None, max_length=1024)


class SendReaction(_Send):
    """React to message `message_id` in chat `to`; an empty emoji removes the reaction."""

    type: Literal["reaction"]
    message_id: MessageId
    emoji: str = Field(max_length=32)
    from_me: bool = Field(default=False, description="Whether the reacted message is our own.")
    sender: Recipient | None = Field(
        default=None,
        description="In groups: the reacted message's author (WhatsApp places the reaction by "
        "it). Taken from what the connector saw when left out.",
    )


class SendPoll(_Send):
    """A poll; votes arrive as `poll.vote` events with the chosen option names."""

    type: Literal["poll"]
    question: str = Field(min_length=1, max_length=255)
    options: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(
        min_length=POLL_OPTIONS_MIN, max_length=POLL_OPTIONS_MAX
    )
    selectable_count: int = Field(
        default=1, ge=1, le=POLL_OPTIONS_MAX, description="How many options a voter may choose."
    )

    @model_validator(mode="after")
    def _options(self) -> SendPoll:
        if len(set(self.options)) != len(self.options):
            raise ValueError("poll options must differ from each other")
        if self.selectable_count > len(self.options):
            raise ValueError("`selectable_count` is more than the number of options")
        return self


EDIT_WINDOW_SECONDS = 15 * 60
"""WhatsApp lets the author edit a message for 15 minutes."""


class SendEdit(_Send):
    """A new text for one of our own messages, within WhatsApp's 15 minutes."""

    type: Literal["edit"]
    message_id: MessageId
    text: str = Field(min_length=1, max_length=65536)


class SendDelete(_Send):
    """Delete a message for everyone: our own, or (as a group admin) someone else's."""

    type: Literal["delete"]
    message_id: MessageId
    sender: Recipient | None = Field(
        default=None,
        description="In groups, for someone else's message: its author. Taken from what the "
        "connector saw when left out; without either the message is taken to be our own.",
    )


class ContactCard(ContractModel):
    """A contact: a name and phone numbers (a vCard is made of them), or a vCard as it is."""

    name: str = Field(min_length=1, max_length=256)
    phones: list[Annotated[str, AfterValidator(normalise_phone)]] = Field(
        default_factory=list, max_length=10
    )
    vcard: str | None = Field(default=None, max_length=16384, pattern=r"^BEGIN:VCARD")

    @model_validator(mode="after")
    def _one_form(self) -> ContactCard:
        if (self.vcard is None) == (not self.phones):
            raise ValueError("give either `phones` or a `vcard`")
        return self


class SendContact(_Send):
    """One contact card, or several in one message."""

    type: Literal["contact"]
    contacts: list[ContactCard] = Field(min_length=1, max_length=MAX_CONTACT_CARDS)


class SendForward(_Send):
    """Forward a message the connector has seen (received or sent, text or media, kept for
    `WABUS_MESSAGE_MEMORY_DAYS`); polls, reactions, edits and deletions cannot be forwarded."""

    type: Literal["forward"]
    message_id: MessageId


def _send_kind(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("type", "text"))
    return str(getattr(value, "type", "text"))


SendMedia = SendImage | SendVideo | SendAudio | SendDocument | SendSticker
"""Every kind of send that uploads media."""

SendMessage = Annotated[
    Annotated[SendText, Tag("text")]
    | Annotated[SendImage, Tag("image")]
    | Annotated[SendVideo, Tag("video")]
    | Annotated[SendAudio, Tag("audio")]
    | Annotated[SendDocument, Tag("document")]
    | Annotated[SendLocation, Tag("location")]
    | Annotated[SendReaction, Tag("reaction")]
    | Annotated[SendSticker, Tag("sticker")]
    | Annotated[SendPoll, Tag("poll")]
    | Annotated[SendEdit, Tag("edit")]
    | Annotated[SendDelete, Tag("delete")]
    | Annotated[SendContact, Tag("contact")]
    | Annotated[SendForward, Tag("forward")],
    Discriminator(_send_kind),
]
"""Every kind of send; `type` selects the kind and defaults to `text`."""

SEND_ADAPTER: TypeAdapter[SendMessage] = TypeAdapter(SendMessage)

SEND_KINDS: dict[str, type[_Send]] = {
    "text": SendText,
    "image": SendImage,
    "video": SendVideo,
    "audio": SendAudio,
    "document": SendDocument,
    "location": SendLocation,
    "reaction": SendReaction,
    "sticker": SendSticker,
    "poll": SendPoll,
    "edit": SendEdit,
    "delete": SendDelete,
    "contact": SendContact,
    "forward": SendForward,
}


class _SendKind(ContractModel):
    model_config = ContractModel.model_config | {"extra": "ignore"}
    type: Literal[
        "text",
        "image",
        "video",
        "audio",
        "document",
        "location",
        "reaction",
        "sticker",
        "poll",
        "edit",
        "delete",
        "contact",
        "forward",
    ] = "text"


def parse_send(data: object) -> SendMessage:
    """Validate a send against the model of its kind, so errors name plain fields (`text`, not
    `text.text`). Raises pydantic's ValidationError."""
    kind = data.get("type", "text") if isinstance(data, dict) else "text"
    model: Any = SEND_KINDS.get(kind) if isinstance(kind, str) else None
    if model is None:  # a kind that is no kind: pydantic says why (the known kinds skip this)
        model = SEND_KINDS[_SendKind.model_validate(data).type]
    message: SendMessage = model.model_validate(data)
    return message


class PairPhone(ContractModel):
    """Ask for a phone pairing code (the alternative to scanning the QR)."""

    phone: str = Field(description="The phone number to pair, international format, digits.")

    @field_validator("phone")
    @classmethod
    def _phone(cls, value: str) -> str:
        return normalise_phone(value)


class Logout(ContractModel):
    """Log the device out of WhatsApp; the instance must be paired again afterwards."""


class MarkRead(ContractModel):
    """Mark messages of a chat as read (blue ticks)."""

    chat: Recipient
    message_ids: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        min_length=1, max_length=1000
    )
    sender: Recipient | None = Field(
        default=None, description="In groups: the JID of their sender."
    )


class Presence(ContractModel):
    """Show (or stop showing) typing or recording in a chat."""

    chat: Recipient
    state: Literal["composing", "recording", "paused"]


COMMAND_MODELS: dict[str, Any] = {
    SEND_COMMAND: SendMessage,
    PAIR_PHONE_COMMAND: PairPhone,
    LOGOUT_COMMAND: Logout,
    MARK_READ_COMMAND: MarkRead,
    PRESENCE_COMMAND: Presence,
}
"""Command name → model of its data (the send command is a union of kinds)."""
