"""What the connector accepts as a command, decided before anything touches NATS state.

Other services publish on `<prefix>.cmd.>` directly, so the connector cannot count on the relay
having checked anything. Every check here is one a command can never pass on a later delivery:
a refused command is answered (`message.failed`, code `invalid_command`, the reason naming the
field and the rule) and acked, never redelivered.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from schemas.commands import COMMAND_MODELS, SEND_COMMAND, parse_send
from schemas.envelope import RawEnvelope
from schemas.ids import (
    COMMAND_ID_MAX,
    INSTANCE_ID_PATTERN,
    command_id_problem,
    is_command_id,
    is_instance_id,
)
from schemas.subjects import parse_subject

INVALID_COMMAND = "invalid_command"
REASON_MAX = 1000
"""Characters of a refusal's reason: enough to name every field, bounded whatever was sent."""


@dataclass(frozen=True)
class Admitted:
    """A command that can be carried out: its ids are usable as NATS names, its data parsed."""

    instance: str
    command: str
    command_id: str
    request: BaseModel
    to: str | None = None


@dataclass(frozen=True)
class Refused:
    """A command that can never be carried out, and what its answer can say."""

    reason: str
    """`<field>: <why>`, for the `message.failed` event and the log."""
    instance: str | None = None
    """The subject's instance, when it is an instance id: where the answer is published."""
    command: str | None = None
    command_id: str | None = None
    """What the answer names: the envelope's id (or its `Nats-Msg-Id`), even when that cannot key
    a send record; None when the command carries nothing a sender could recognise."""
    to: str | None = None

    @property
    def recordable(self) -> bool:
        """The id can key a send record (`<instance>.<command id>`)."""
        return self.command == SEND_COMMAND and is_command_id(self.command_id)


def validation_summary(error: ValidationError) -> str:
    """`field: message; …` — short enough for an event, precise enough to fix the request."""
    return "; ".join(
        f"{'.'.join(str(p) for p in item['loc']) or 'body'}: {item['msg']}"
        for item in error.errors()
    )


def _shown(value: object, longest: int = COMMAND_ID_MAX) -> str | None:
    """`value` if it can be shown in an answer (a short printable string), else None. A sender
    recognises their id in it even when it is no usable command id: it is shown, never stored."""
    if isinstance(value, str) and 0 < len(value) <= longest and value.isprintable():
        return value
    return None


def admit(
    subject: str, data: bytes, headers: Mapping[str, str] | None = None
) -> Admitted | Refused:
    """Check a command message: subject, JSON, envelope, ids, subject/envelope agreement, data."""
    try:
        _, instance, command = parse_subject(subject)
    except ValueError:
        return Refused("subject: not `<prefix>.cmd.<instance>.<command>`")
    header_id = _shown((headers or {}).get("Nats-Msg-Id"))
    if not is_instance_id(instance):
        return Refused(
            f"subject: {instance[:64]!r} is not an instance id ({INSTANCE_ID_PATTERN})",
            command=command,
            command_id=header_id,
        )
    refuse = _Refuser(instance, command, header_id)
    try:
        body: Any = json.loads(data)
    except ValueError as error:  # UnicodeDecodeError is a ValueError too
        return refuse(f"body: not JSON ({error})")
    except RecursionError:
        return refuse("body: JSON nested too deeply to read")
    if not isinstance(body, dict):
        return refuse(f"body: a JSON object (the envelope) is expected, not {type(body).__name__}")
    raw_id = body.get("id")
    refuse.command_id = _shown(raw_id) or header_id
    payload = body.get("data")
    refuse.to = _shown(payload.get("to") if isinstance(payload, dict) else None, 256)
    problem = command_id_problem(raw_id)
    if problem is not None:
        return refuse(f"id: not a usable command id: {problem}")
    try:
        envelope = RawEnvelope.model_validate(body)
    except ValidationError as error:
        return refuse(f"envelope: {validation_summary(error)}")
    if envelope.instance != instance:
        return refuse(
            f"instance: the envelope is for {envelope.instance!r} but was published on the "
            f"subject of {instance!r}"
        )
    if envelope.type != command:
        return refuse(f"type: {envelope.type!r} but the subject's command is {command[:64]!r}")
    if command not in COMMAND_MODELS:
        known = ", ".join(COMMAND_MODELS)
        return refuse(f"type: unknown command {command[:64]!r} (one of {known})")
    try:
        request: BaseModel = (
            parse_send(envelope.data)
            if command == SEND_COMMAND
            else COMMAND_MODELS[command].model_validate(envelope.data)
        )
    except ValidationError as error:
        return refuse(validation_summary(error))
    return Admitted(instance, command, envelope.id, request, _shown(getattr(request, "to", None)))


@dataclass
class _Refuser:
    """Builds `Refused` answers that carry whatever is known so far."""

    instance: str
    command: str
    command_id: str | None
    to: str | None = None

    def __call__(self, reason: str) -> Refused:
        return Refused(_capped(reason), self.instance, self.command, self.command_id, self.to)


def _capped(reason: str) -> str:
    return reason if len(reason) <= REASON_MAX else reason[: REASON_MAX - 1] + "…"
