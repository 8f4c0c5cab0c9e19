"""Controls of the `sim` engine, published on `<prefix>.sim.<instance>.<action>` (sim only)."""

from __future__ import annotations

from pydantic import Field

from schemas.envelope import ContractModel, Timestamp
from schemas.events import Contact, Location, Media, MessageKind, Poll, Reaction

INBOUND = "inbound"
FAIL_NEXT_SENDS = "fail_next_sends"
SENT = "sent"
"""A request answered with `{"ok": true, "sent": [{"message_id", "data"}, …]}`: every send the
sim engine recorded for the instance, in order (what tests assert a reply against)."""
ACTIVITY = "activity"
"""A request answered with `{"ok": true, "open": …, "reads": […], "presences": […], …}`: whether
the session is open in this connector, the read receipts and presence updates the sim engine was
asked for (in order), blocked and subscribed contacts and rejected calls."""
SCAN = "scan"
"""Complete pairing: the QR (or pairing code) shown was scanned on the phone."""
DROP = "drop"
"""Drop the connection as a network failure would (the connector reconnects)."""
LOGOUT = "logout"
"""Unlink the device from the phone's side: the session ends as `logged_out`."""
CONTACTS = "contacts"
"""Put people on the sim network (`SimContacts`): only they are on WhatsApp."""
GROUP = "group"
"""Make a group on the network (`SimGroup`), answered with `{"ok": true, "group": <jid>}`."""
PRESENCE = "presence"
"""A contact goes online or offline (`SimPresence`): `presence.update` when subscribed."""
CALL = "call"
"""Someone calls the account (`SimCall`): `call.offer`, rejected when the instance says so."""
FAIL_CONNECT = "fail_connect"
"""Make the next `count` connect attempts fail (`{"count": N}`), as an unreachable network."""


class SimVote(ContractModel):
    """A vote by `from` in poll `poll_id` (one the instance sent, or one played inbound) for
    the options named; an empty list takes the vote back."""

    poll_id: str = Field(max_length=128)
    options: list[str] = Field(default_factory=list, max_length=12)


class SimInbound(ContractModel):
    """An inbound message to play, as the neonize engine would map it.

    With `repeat` > 1 the engine emits that many messages, numbered, `interval_ms` apart, from its
    own task: benchmarks and outage tests need an injection that does not depend on NATS.
    """

    from_: str = Field(alias="from")
    text: str | None = None
    id: str | None = None
    chat: str | None = None
    type: MessageKind = MessageKind.TEXT
    push_name: str | None = None
    media: Media | None = None
    location: Location | None = None
    contacts: list[Contact] = Field(default_factory=list, max_length=20)
    reaction: Reaction | None = None
    poll: Poll | None = Field(
        default=None, description="A poll (type `poll`); the sim gives it a secret for votes."
    )
    vote: SimVote | None = Field(
        default=None,
        description="Instead of a message: a vote in a poll, encrypted as WhatsApp does.",
    )
    target_message_id: str | None = None
    quoted_message_id: str | None = None
    mentions: list[str] = Field(default_factory=list, max_length=256)
    view_once: bool = False
    forwarded: bool = False
    media_base64: str | None = Field(
        default=None,
        max_length=22_000_000,
        description="Media bytes to deliver with the message (the connector stores them).",
    )
    repeat: int = Field(default=1, ge=1, le=1_000_000)
    interval_ms: float = Field(default=0, ge=0, le=60_000)


class SimFailNextSends(ContractModel):
    """Make the next `count` sends fail with `code` (to exercise `message.failed`)."""

    count: int = Field(default=1, ge=1)
    code: str = "sim_failure"
    retryable: bool = False


class SimFailConnect(ContractModel):
    """Make the next `count` connect attempts fail with a network error."""

    count: int = Field(default=1, ge=1, le=1000)


class SimContact(ContractModel):
    """Someone on the sim network, by phone number, with a LID when WhatsApp would use one."""

    phone: str = Field(max_length=32, pattern=r"^[0-9]{6,20}$")
    lid: str | None = Field(default=None, max_length=64, pattern=r"^[0-9]{6,30}@lid$")
    name: str | None = Field(default=None, max_length=256)
    about: str | None = Field(default=None, max_length=1024)
    business: bool = False


class SimContacts(ContractModel):
    contacts: list[SimContact] = Field(max_length=1000)


class SimGroup(ContractModel):
    """A group made by someone else; the account is in it when `member`, an admin when `admin`."""

    jid: str | None = Field(default=None, max_length=64, pattern=r"^[0-9-]{6,40}@g\.us$")
    name: str = Field(max_length=100)
    owner: str | None = Field(default=None, max_length=64)
    participants: list[str] = Field(default_factory=list, max_length=1000)
    admins: list[str] = Field(default_factory=list, max_length=1000)
    member: bool = True
    admin: bool = False


class SimPresence(ContractModel):
    jid: str = Field(max_length=64)
    online: bool
    last_seen: Timestamp | None = None


class SimCall(ContractModel):
    from_: str = Field(alias="from", max_length=64)
    call_id: str | None = Field(default=None, max_length=64)
    video: bool = False
