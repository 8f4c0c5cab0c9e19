"""Commands the connector executes, published on `<prefix>.cmd.<instance>.<command>` in an
envelope whose `type` is the command name and whose `id` is the command id.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, TypeAdapter, field_validator, model_validator

from schemas.envelope import ContractModel

SEND_COMMAND = "send"
PAIR_PHONE_COMMAND = "pair_phone"
LOGOUT_COMMAND = "logout"
MARK_READ_COMMAND = "read"
PRESENCE_COMMAND = "presence"

_JID = re.compile(r"^[0-9A-Za-z.:_-]+@(s\.whatsapp\.net|g\.us|lid|newsletter|broadcast)$")
_PHONE_DECORATION = re.compile(r"[\s()+.-]")

MAX_MEDIA_BYTES = 16 * 1024 * 1024
"""WhatsApp's limit for images, audio and video; documents may be larger but are capped here too."""


def normalise_recipient(value: str) -> str:
    """Accept a JID as is, or a phone number with the usual decoration, returned as digits."""
    value = value.strip()
    if "@" in value:
        if not _JID.fullmatch(value):
            raise ValueError("not a WhatsApp JID (…@s.whatsapp.net, …@g.us, …@lid)")
        return value
    digits = _PHONE_DECORATION.sub("", value)
    if not digits.isdigit() or not 6 <= len(digits) <= 20:
        raise ValueError("expected a phone number in international format (digits) or a JID")
    return digits


def normalise_phone(value: str) -> str:
    digits = _PHONE_DECORATION.sub("", value.strip())
    if not digits.isdigit() or not 6 <= len(digits) <= 20:
        raise ValueError("expected a phone number in international format (digits)")
    return digits


class _Send(ContractModel):
    """Fields every kind of send shares."""

    to: str = Field(description="Phone number in international format (digits) or a JID.")
    reply_to: str | None = Field(
        default=None, max_length=128, description="WhatsApp id of a message in the chat to quote."
    )
    mentions: list[str] = Field(
        default_factory=list, max_length=256, description="Phone numbers or JIDs to mention."
    )

    @field_validator("to")
    @classmethod
    def _recipient(cls, value: str) -> str:
        return normalise_recipient(value)

    @field_validator("mentions")
    @classmethod
    def _mentions(cls, value: list[str]) -> list[str]:
        return [normalise_recipient(item) for item in value]


class SendText(_Send):
    """A text message: `{"to": "<digits or JID>", "text": "…"}` (`type` may be left out)."""

    type: Literal["text"] = "text"
    text: str = Field(min_length=1, max_length=65536)


class _SendMedia(_Send):
    """Media from `url` (fetched by the connector, SSRF-checked, size-capped) or inline `base64`."""

    url: str | None = Field(default=None, max_length=4096, pattern=r"^https?://")
    base64: str | None = Field(default=None, max_length=(MAX_MEDIA_BYTES * 4) // 3 + 4)
    mimetype: str | None = Field(default=None, max_length=255)
    caption: str | None = Field(default=None, max_length=4096)

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
    message_ids: list[str] = Field(min_length=1, max_length=1000)
    sender: str | None = Field(default=None, description="In groups: the JID of their sender.")

    @field_validator("chat")
    @classmethod
    def _chat(cls, value: str) -> str:
        return normalise_recipient(value)


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
