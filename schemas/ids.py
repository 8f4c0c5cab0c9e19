"""Identifier rules and generators shared by every event and command."""

from __future__ import annotations

import hashlib
import re
import secrets
from typing import Annotated

from pydantic import StringConstraints

INSTANCE_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
IDEMPOTENCY_KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.=-]{0,127}$"
"""Also a valid NATS KV key, so a command id can key the sends bucket as it is."""

InstanceId = Annotated[str, StringConstraints(pattern=INSTANCE_ID_PATTERN)]
CommandId = Annotated[str, StringConstraints(pattern=IDEMPOTENCY_KEY_PATTERN)]

_instance_re = re.compile(INSTANCE_ID_PATTERN)
_idempotency_re = re.compile(IDEMPOTENCY_KEY_PATTERN)


def is_instance_id(value: str) -> bool:
    """True when `value` is a valid instance id (and so a safe NATS subject token)."""
    return bool(_instance_re.fullmatch(value))


def is_command_id(value: str) -> bool:
    """True when `value` can serve as a command id and `Nats-Msg-Id`."""
    return bool(_idempotency_re.fullmatch(value))


def new_event_id() -> str:
    """A random event id, for events that have no source id of their own."""
    return "evt_" + secrets.token_hex(12)


def new_command_id() -> str:
    """A random command id, used when the caller sent no `Idempotency-Key`."""
    return "cmd_" + secrets.token_hex(12)


def derived_event_id(instance: str, event_type: str, source_id: str) -> str:
    """A deterministic event id, so a replayed WhatsApp event maps to the same envelope id.

    JetStream drops the second publish of the same id inside its duplicate window, and webhook
    receivers deduplicate on `webhook-id`, so determinism here is what makes replays harmless.
    """
    digest = hashlib.sha256(f"{instance}\x1f{event_type}\x1f{source_id}".encode()).hexdigest()
    return "evt_" + digest[:24]
