"""An event as webhook delivery sees it, read once from its JetStream message — or the reason it is
poison: a message on the events stream that is not an envelope of the contract, or whose envelope
does not match its subject.

Pure: no NATS here. The dispatcher dead-letters poison at first sight, so one bad message never
stalls its endpoint nor sends the events around it again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from schemas.envelope import RawEnvelope

UNKNOWN = "_unknown"
"""Stands in for an instance or event type a poison message's subject does not give."""


@dataclass(frozen=True, slots=True)
class EventRef:
    """An event to deliver: its bytes as published (what is signed and sent) and what delivery
    needs to know about it."""

    body: bytes
    event_id: str
    seq: int
    """Its sequence in `WA_EVENTS` (0 when unknown)."""
    instance: str
    event_type: str
    data: dict[str, Any]

    @property
    def lane(self) -> tuple[str, str | None]:
        """Events of one chat share a lane; events without a chat share their instance's."""
        chat = self.data.get("chat")
        return self.instance, chat if isinstance(chat, str) else None


@dataclass(frozen=True, slots=True)
class Poison:
    """A message that cannot be delivered as an event, and why."""

    body: bytes
    seq: int
    instance: str
    event_type: str
    reason: str


def read_event(subject: str, body: bytes, seq: int) -> EventRef | Poison:
    """`<prefix>.evt.<instance>.<type>` carrying an envelope of that instance and type."""
    parts = subject.split(".", 3)
    if len(parts) != 4 or parts[1] != "evt":
        return Poison(body, seq, UNKNOWN, UNKNOWN, f"not an event subject: {subject[:200]!r}")
    instance, event_type = parts[2], parts[3]
    try:
        envelope = RawEnvelope.model_validate_json(body)
    except ValidationError as error:
        problem = error.errors()[0]
        where = ".".join(str(part) for part in problem["loc"]) or "body"
        reason = f"not an envelope: {where}: {problem['msg']}"
        return Poison(body, seq, instance, event_type, reason)
    if envelope.instance != instance or envelope.type != event_type:
        reason = (
            f"envelope of {envelope.instance!r} / {envelope.type!r} "
            f"on the subject of {instance!r} / {event_type!r}"
        )
        return Poison(body, seq, instance, event_type, reason)
    if not (envelope.id.isascii() and envelope.id.isprintable()) or " " in envelope.id:
        return Poison(body, seq, instance, event_type, "envelope id is not a header-safe token")
    return EventRef(body, envelope.id, seq, instance, event_type, envelope.data)
