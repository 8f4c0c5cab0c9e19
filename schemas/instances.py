"""Instances as data: the configuration the relay (or any NATS client) writes to the config
bucket, the status the connector writes to the status bucket, and the send records behind
idempotent sends. Keys are instance ids (send records: `<instance>.<command id>`).
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Literal

from pydantic import Field, field_validator
from yarl import URL

from schemas.envelope import ContractModel, Timestamp
from schemas.ids import ENDPOINT_ID_PATTERN

_UNSAFE_IN_URL = re.compile(r"[\x00-\x20\x7f]")


def check_http_url(value: str) -> str:
    """`value` if it is an absolute http(s) URL with a host and a valid port, else ValueError
    saying which rule it breaks. Parsed as the SSRF guard and the deliverers parse it (yarl),
    so a URL stored here is one they can read."""
    if _UNSAFE_IN_URL.search(value):
        raise ValueError("a URL has no spaces or control characters (percent-encode them)")
    try:
        parsed = URL(value)
        host, port = parsed.host, parsed.explicit_port
    except (ValueError, IndexError) as error:
        # UnicodeError (a bad IDNA host) is a ValueError; yarl 1.25 raises IndexError for
        # some broken authorities (`http://[v1.x]@`)
        raise ValueError(f"not a valid URL: {error or type(error).__name__}") from error
    if parsed.scheme not in {"http", "https"}:
        raise ValueError("expected an http:// or https:// URL")
    if not host:
        raise ValueError("expected a URL with a host")
    if port is not None and not 1 <= port <= 65535:
        raise ValueError(f"port {port} is outside 1-65535")
    return value


class WebhookEndpoint(ContractModel):
    """A per-instance webhook endpoint with its own secret and event filter."""

    id: str = Field(pattern=ENDPOINT_ID_PATTERN)
    url: str = Field(pattern=r"^https?://", max_length=2048)
    events: list[str] = Field(
        default_factory=lambda: ["*"],
        description="Event-type globs, e.g. `message.*`; `*` is every event.",
    )
    secret: str = Field(description="`whsec_…`; never returned by the API after creation.")
    previous_secret: str | None = Field(
        default=None, description="During rotation: still signed with until `rotation_ends_at`."
    )
    rotation_ends_at: Timestamp | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_http_url(value)

    @field_validator("secret", "previous_secret")
    @classmethod
    def _whsec(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("whsec_"):
            raise ValueError("a Standard Webhooks secret starts with `whsec_`")
        return value


class CallPolicy(ContractModel):
    """What the connector does when someone calls: nothing (the phone rings), or reject the
    call at once and, optionally, answer the caller with a text."""

    reject: bool = False
    message: str | None = Field(default=None, min_length=1, max_length=4096)


class InstanceConfig(ContractModel):
    """What the operator wants: the connector makes the session match it."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    desired_state: Literal["running", "stopped"] = "running"
    webhooks: list[WebhookEndpoint] = Field(default_factory=list, max_length=16)
    calls: CallPolicy = Field(default_factory=lambda: CallPolicy())
    created_at: Timestamp
    updated_at: Timestamp


class SessionState(StrEnum):
    """The lifecycle of a session, as the connector's state machine defines it."""

    CONNECTING = "connecting"
    QR = "qr"
    PAIRING = "pairing"
    OPEN = "open"
    CLOSED = "closed"
    """Dropped; will reconnect (see `next_retry_at`)."""
    LOGGED_OUT = "logged_out"
    """WhatsApp ended the session; it needs pairing again."""
    FAILED = "failed"
    """The connector gave up (`reason_code` says why)."""
    STOPPED = "stopped"
    """Not running because its configuration says so."""


class InstanceStatus(ContractModel):
    """What the session is doing now, written by the connector on every transition."""

    instance: str
    state: SessionState
    reason_code: str | None = None
    reason: str | None = None
    attempt: int = Field(default=0, ge=0)
    next_retry_at: Timestamp | None = None
    jid: str | None = None
    phone: str | None = None
    push_name: str | None = None
    qr: str | None = Field(default=None, description="Current raw QR payload while `state=qr`.")
    qr_expires_at: Timestamp | None = None
    qr_refreshes: int = Field(default=0, ge=0)
    pair_code: str | None = None
    connector: str | None = Field(default=None, description="Id of the connector owning it.")
    updated_at: Timestamp


class SendState(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    """Handed to WhatsApp, answer not recorded yet (see the idempotency notes)."""
    SENT = "sent"
    FAILED = "failed"


class SendRecord(ContractModel):
    """The fate of one send command, keyed `<instance>.<command id>` in the sends bucket."""

    command_id: str
    instance: str
    state: SendState
    message_id: str | None = None
    chat: str | None = None
    error_code: str | None = None
    error: str | None = None
    updated_at: Timestamp


def send_record_key(instance: str, command_id: str) -> str:
    return f"{instance}.{command_id}"


__all__ = [
    "ENDPOINT_ID_PATTERN",
    "InstanceConfig",
    "InstanceStatus",
    "SendRecord",
    "SendState",
    "SessionState",
    "WebhookEndpoint",
    "send_record_key",
]
