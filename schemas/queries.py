"""Queries: requests that need an answer (is this number on WhatsApp? who is in this group?),
unlike sends, which are commands answered later by events.

A query is a NATS request on `<prefix>.req.<instance>.<query>` whose body is the query's model
as JSON; the connector that runs the instance answers on the reply subject with a `QueryAnswer`:
`{"ok": true, "data": {…}}` or `{"ok": false, "code": "…", "reason": "…"}`. Only the connector
holding the instance's session subscribes to its subject, so "no responders" means no connector
runs it. Any NATS service may ask; the relay turns queries into HTTP routes.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Literal

from pydantic import Field, field_validator

from schemas.commands import Recipient, normalise_phone
from schemas.envelope import ContractModel, Timestamp

GROUP_SERVER = "g.us"
MAX_PHOTO_BYTES = 1024 * 1024
MAX_BATCH = 50
"""Phone numbers per check, participants per change: WhatsApp's own requests stay small."""


def check_group(value: str) -> str:
    if not value.endswith(f"@{GROUP_SERVER}") or len(value) > 64:
        raise ValueError("expected a group JID (`<digits>@g.us`)")
    user = value.removesuffix(f"@{GROUP_SERVER}")
    if not user.replace("-", "").isascii() or not user.replace("-", "").isdigit():
        raise ValueError("expected a group JID (`<digits>@g.us`)")
    return value


class _Group(ContractModel):
    group: str = Field(description="The group's JID, `<digits>@g.us`.")

    @field_validator("group")
    @classmethod
    def _group(cls, value: str) -> str:
        return check_group(value)


# -- contacts -------------------------------------------------------------------------------


class CheckNumbers(ContractModel):
    """Which of these phone numbers have WhatsApp."""

    phones: list[str] = Field(min_length=1, max_length=MAX_BATCH)

    @field_validator("phones")
    @classmethod
    def _phones(cls, value: list[str]) -> list[str]:
        return [normalise_phone(phone) for phone in value]


class NumberCheck(ContractModel):
    phone: str
    on_whatsapp: bool
    jid: str | None = Field(default=None, description="The account's JID, when it has one.")


class NumbersChecked(ContractModel):
    numbers: list[NumberCheck]


class ContactQuery(ContractModel):
    """A contact, by phone number or JID (a phone-number JID or a `…@lid`)."""

    jid: Recipient


class ContactProfile(ContractModel):
    jid: str
    phone_jid: str | None = Field(default=None, description="Its phone-number JID, when known.")
    lid: str | None = Field(default=None, description="Its LID (`…@lid`), when known.")
    name: str | None = Field(default=None, description="Verified business name, when it has one.")
    about: str | None = None
    picture_url: str | None = Field(default=None, description="Expires after a while.")
    business: bool = False


class LidMapping(ContractModel):
    """A contact's two addresses: WhatsApp names some people by a LID (`…@lid`) instead of their
    phone number; `known` is false when the connector's WhatsApp session has not learnt the
    other one (it learns it from messages and group lists)."""

    jid: str
    phone_jid: str | None = None
    lid: str | None = None
    known: bool


class BlockContact(ContractModel):
    jid: Recipient
    block: bool = Field(default=True, description="`false` unblocks.")


class SubscribePresence(ContractModel):
    """Follow a contact's online / last-seen presence: `presence.update` events follow."""

    jid: Recipient


class Done(ContractModel):
    """A query that changes something and answers nothing more."""

    done: Literal[True] = True


# -- groups ---------------------------------------------------------------------------------


class ListGroups(ContractModel):
    """The groups the account is in."""


class GroupParticipant(ContractModel):
    jid: str
    phone_jid: str | None = None
    admin: bool = False
    super_admin: bool = False


class GroupInfo(ContractModel):
    jid: str
    name: str
    description: str | None = None
    owner: str | None = None
    created_at: Timestamp | None = None
    announce: bool = Field(default=False, description="Only admins may send.")
    locked: bool = Field(default=False, description="Only admins may edit the group's settings.")
    participants: list[GroupParticipant] = Field(default_factory=list)


class Groups(ContractModel):
    groups: list[GroupInfo]


class CreateGroup(ContractModel):
    name: str = Field(min_length=1, max_length=100)
    participants: list[Recipient] = Field(min_length=1, max_length=MAX_BATCH)


class GroupQuery(_Group):
    """One group, by JID."""


ParticipantAction = Literal["add", "remove", "promote", "demote"]


class ChangeParticipants(_Group):
    action: ParticipantAction
    participants: list[Recipient] = Field(min_length=1, max_length=MAX_BATCH)


class ParticipantResult(ContractModel):
    jid: str
    ok: bool
    error: str | None = Field(default=None, description="Why not, in WhatsApp's words (a code).")


class ParticipantsChanged(ContractModel):
    results: list[ParticipantResult]


class GroupInvite(_Group):
    revoke: bool = Field(default=False, description="Make a new link; the old one stops working.")


class InviteLink(ContractModel):
    link: str


class JoinGroup(ContractModel):
    link: str = Field(max_length=256, pattern=r"^https://chat\.whatsapp\.com/[A-Za-z0-9]{10,40}$")


class Joined(ContractModel):
    group: str


PHOTO_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"RIFF", b"GIF87a", b"GIF89a")
"""How the image formats a group photo may be sent in begin (a WebP file: `RIFF….WEBP`)."""


class GroupSettings(_Group):
    """Change what is given; what is left out stays."""

    name: str | None = Field(default=None, min_length=1, max_length=100)
    description: str | None = Field(default=None, max_length=2048)
    announce: bool | None = None
    locked: bool | None = None
    photo_base64: str | None = Field(
        default=None,
        max_length=(MAX_PHOTO_BYTES * 4) // 3 + 4,
        description=f"A new group photo, base64, at most {MAX_PHOTO_BYTES} bytes: a JPEG, PNG, "
        "WebP or GIF image; the connector sends its centre square, at most 640 x 640, as a JPEG "
        "(WhatsApp's format).",
    )

    @field_validator("photo_base64")
    @classmethod
    def _photo(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as error:
            raise ValueError(f"expected standard base64 of an image: {error}") from error
        if not data.startswith(PHOTO_SIGNATURES) or len(data) > MAX_PHOTO_BYTES:
            raise ValueError(
                f"expected a JPEG, PNG, WebP or GIF image of at most {MAX_PHOTO_BYTES} bytes"
            )
        if data.startswith(b"RIFF") and data[8:12] != b"WEBP":
            raise ValueError("expected a JPEG, PNG, WebP or GIF image (a RIFF file, not WebP)")
        return value


# -- the wire -------------------------------------------------------------------------------


class QueryAnswer(ContractModel):
    """The reply to every query."""

    ok: bool
    data: dict[str, Any] | None = None
    code: str | None = Field(default=None, description="Stable, when `ok` is false.")
    reason: str | None = None


QUERIES: dict[str, tuple[type[ContractModel], type[ContractModel]]] = {
    "contacts_check": (CheckNumbers, NumbersChecked),
    "contact_profile": (ContactQuery, ContactProfile),
    "lid_resolve": (ContactQuery, LidMapping),
    "contact_block": (BlockContact, Done),
    "presence_subscribe": (SubscribePresence, Done),
    "groups_list": (ListGroups, Groups),
    "group_create": (CreateGroup, GroupInfo),
    "group_info": (GroupQuery, GroupInfo),
    "group_leave": (GroupQuery, Done),
    "group_participants": (ChangeParticipants, ParticipantsChanged),
    "group_invite": (GroupInvite, InviteLink),
    "group_join": (JoinGroup, Joined),
    "group_settings": (GroupSettings, Done),
}
"""Query name (a subject token) → (request model, answer data model)."""

QUERY_ERRORS: dict[str, int] = {
    "invalid_query": 422,
    "unknown_query": 404,
    "instance_not_open": 409,
    "unknown_group": 404,
    "not_group_admin": 403,
    "not_on_whatsapp": 404,
    "invalid_invite": 404,
    "engine_error": 502,
}
"""Every code a query can fail with, and the HTTP status the relay answers it with."""
