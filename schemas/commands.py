"""Commands the connector executes, published on `<prefix>.cmd.<instance>.<command>`."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from schemas.envelope import ContractModel

SEND_COMMAND = "send"

_JID = re.compile(r"^[0-9A-Za-z.:_-]+@(s\.whatsapp\.net|g\.us|lid|newsletter|broadcast)$")
_PHONE_DECORATION = re.compile(r"[\s()+.-]")


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


class SendText(ContractModel):
    """A text message: `{"to": "<digits or JID>", "text": "…"}`."""

    type: Literal["text"] = "text"
    to: str = Field(description="Phone number in international format (digits) or a JID.")
    text: str = Field(min_length=1, max_length=65536)

    @field_validator("to")
    @classmethod
    def _recipient(cls, value: str) -> str:
        return normalise_recipient(value)


SendMessage = SendText
"""Every kind of send the connector carries out (a discriminated union as kinds are added)."""
