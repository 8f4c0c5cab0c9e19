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


class _Send(ContractModel):
    """Fields every kind of send shares."""

    to: str = Field(description="Phone number in international format (digits) or a JID.")
    reply_to: str | None = Field(
        default=None, max_length=128, description="WhatsApp id of a message in the chat to quote."
    )
    mentions: list[Annotated[str, AfterValidator(normalise_recipient)]] = Field(
        default_factory=list, max_length=256, description="Phone numbers or JIDs to mention."
    )

    @field_validator("to")
    @classmethod
    def _recipient(cls, value: str) -> str:
        return normalise_recipient(value)


class SendText(_Send):
    """A text message: `{"to": "<digits or JID>", "text": "…"}` (`type` may be left out)."""

    type: Literal["text"] = "text"
    text: str = Field(min_length=1, max_length=65536)


class _SendMedia(_Send):
    """Media from `url` (fetched by the connector, SSRF-checked, size-capped) or inline `base64`."""

    url: str | None = Field(default=None, max_length=4096, pattern=r"^https?://")
    base64: str | None = Field(
        default=None,
        max_length=(MAX_MEDIA_BYTES * 4) // 3 + 4,
        description=f"Standard base64 (no `data:` prefix) of 1 to {MAX_MEDIA_BYTES} bytes.",
    )
    mimetype: str | None = Field(default=None, max_length=255, pattern=MIMETYPE_PATTERN)
    caption: str | None = Field(default=None, max_length=4096)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else check_http_url(value)

    @field_validator("base64")
    @classmethod
    def _base64(cls, value: str | None) -> str | None:
        return None if value is None else check_base64_media(value)

    @model_validator(mode="after")
    def _one_source(self) -> _SendMedia:
        if (self.url is None) == (self.base64 is None):
            raise ValueError("give exactly one of `url` or `base64`")
        return self


class SendImage(_SendMedia):
    type: Literal["image"]


class SendVideo(_SendMedia):
    type: Literal["video"]


class SendAudio(_SendMedia):
    type: Literal["audio"]
    voice: bool = Field(default=False, description="Send as a voice note (push-to-talk).")


class SendDocument(_SendMedia):
    type: Literal["document"]
    filename: str | None = Field(default=None, max_length=255)


class SendLocation(_Send):
    type: Literal["location"]
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)
    name: str | None = Field(default=None, max_length=1024)
    address: str | None = Field(default=None, max_length=1024)


class SendReaction(_Send):
    """React to message `message_id` in chat `to`; an empty emoji removes the reaction."""

    type: Literal["reaction"]
    message_id: str = Field(min_length=1, max_length=128)
    emoji: str = Field(max_length=32)
    from_me: bool = Field(default=False, description="Whether the reacted message is our own.")


def _send_kind(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("type", "text"))
    return str(getattr(value, "type", "text"))


SendMessage = Annotated[
    Annotated[SendText, Tag("text")]
    | Annotated[SendImage, Tag("image")]
    | Annotated[SendVideo, Tag("video")]
    | Annotated[SendAudio, Tag("audio")]
    | Annotated[SendDocument, Tag("document")]
    | Annotated[SendLocation, Tag("location")]
    | Annotated[SendReaction, Tag("reaction")],
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
}


class _SendKind(ContractModel):
    model_config = ContractModel.model_config | {"extra": "ignore"}
    type: Literal["text", "image", "video", "audio", "document", "location", "reaction"] = "text"


def parse_send(data: object) -> SendMessage:
    """Validate a send against the model of its kind, so errors name plain fields (`text`, not
    `text.text`). Raises pydantic's ValidationError."""
    kind = _SendKind.model_validate(data if isinstance(data, dict) else {}).type
    model: Any = SEND_KINDS[kind]
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

    chat: str
    message_ids: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        min_length=1, max_length=1000
    )
    sender: str | None = Field(default=None, description="In groups: the JID of their sender.")

    @field_validator("chat")
    @classmethod
    def _chat(cls, value: str) -> str:
        return normalise_recipient(value)

    @field_validator("sender")
    @classmethod
    def _sender(cls, value: str | None) -> str | None:
        return None if value is None else normalise_recipient(value)


class Presence(ContractModel):
    """Show (or stop showing) typing or recording in a chat."""

    chat: str
    state: Literal["composing", "recording", "paused"]

    @field_validator("chat")
    @classmethod
    def _chat(cls, value: str) -> str:
        return normalise_recipient(value)


COMMAND_MODELS: dict[str, Any] = {
    SEND_COMMAND: SendMessage,
    PAIR_PHONE_COMMAND: PairPhone,
    LOGOUT_COMMAND: Logout,
    MARK_READ_COMMAND: MarkRead,
    PRESENCE_COMMAND: Presence,
}
"""Command name → model of its data (the send command is a union of kinds)."""
