"""Request and answer shapes of the HTTP API that are not contract models of their own.

Where the contract already has a model (commands, `InstanceStatus`, `SendRecord`), the API uses
it as is; these add only what HTTP needs (secrets shown once, waiting, answers).
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from schemas.envelope import ContractModel, Timestamp
from schemas.ids import INSTANCE_ID_PATTERN
from schemas.instances import (
    ENDPOINT_ID_PATTERN,
    CallPolicy,
    InstanceStatus,
    WebhookEndpoint,
    check_http_url,
)

EVENT_FILTER_PATTERN = r"^(\*|[a-z][a-z_]*(\.[a-z_*]+)*(\.\*)?)$"
MAX_BIGINT = 2**63 - 1
"""Postgres `bigint`: a cursor beyond it cannot name a row (and asyncpg refuses to send it)."""
EVENT_ID_PATTERN = r"^[^\x00-\x1f\x7f]{1,200}$"
"""Any envelope id, but no control characters: Postgres text refuses NUL."""


def _in_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError as error:
        raise ValueError("out of range once converted to UTC") from error


Instant = Annotated[
    AwareDatetime,
    AfterValidator(_in_utc),
    Field(description="RFC 3339 with a time zone (`Z` or `±hh:mm`)."),
]
"""A point in time given to the API: a time zone is required, so it means one instant only."""


class WebhookEndpointIn(ContractModel):
    """A per-instance webhook endpoint to create; the secret is generated when left out."""

    id: str | None = Field(default=None, pattern=ENDPOINT_ID_PATTERN)
    url: str = Field(pattern=r"^https?://", max_length=2048)
    events: list[str] = Field(
        default_factory=lambda: ["*"],
        min_length=1,
        max_length=64,
        description="Event-type globs, e.g. `message.*`; `*` is every event.",
    )
    secret: str | None = Field(
        default=None, max_length=256, description="`whsec_…`; generated when absent."
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_http_url(value)

    @field_validator("events")
    @classmethod
    def _filters(cls, value: list[str]) -> list[str]:
        for item in value:
            if len(item) > 64 or not re.fullmatch(EVENT_FILTER_PATTERN, item):
                raise ValueError(f"{item!r} is not an event type or glob like `message.*`")
        return value

    @field_validator("secret")
    @classmethod
    def _whsec(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            key = base64.b64decode(value.removeprefix("whsec_"), validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if not value.startswith("whsec_") or len(key) < 24:
            raise ValueError("a Standard Webhooks secret: `whsec_` then base64 of 24+ bytes")
        return value


class InstanceCreate(ContractModel):
    """Create an instance: the connector starts its session when `desired_state` is running."""

    id: str = Field(pattern=INSTANCE_ID_PATTERN)
    desired_state: Literal["running", "stopped"] = "running"
    webhooks: list[WebhookEndpointIn] = Field(default_factory=list, max_length=16)
    calls: CallPolicy = Field(
        default_factory=lambda: CallPolicy(),
        description="Reject calls at once (and answer the caller with `message`), or let ring.",
    )


class InstanceUpdate(ContractModel):
    """Change what the connector should do with an instance: start or stop its session, or
    its call policy; what is left out stays."""

    desired_state: Literal["running", "stopped"] | None = None
    calls: CallPolicy | None = None

    @model_validator(mode="after")
    def _something(self) -> InstanceUpdate:
        if self.desired_state is None and self.calls is None:
            raise ValueError("give `desired_state` or `calls`")
        return self


class WebhookEndpointView(BaseModel):
    """A webhook endpoint as the API shows it: the secret only in the creation answer."""

    model_config = ConfigDict(frozen=True)

    id: str
    url: str
    events: list[str]
    secret: str | None = Field(
        default=None, description="Only in the answer to the request that created it."
    )

    @classmethod
    def of(cls, endpoint: WebhookEndpoint, *, with_secret: bool = False) -> WebhookEndpointView:
        return cls(
            id=endpoint.id,
            url=endpoint.url,
            events=endpoint.events,
            secret=endpoint.secret if with_secret else None,
        )


class InstanceView(BaseModel):
    """An instance: its configuration (secrets hidden) and, when asked for one, its status."""

    model_config = ConfigDict(frozen=True)

    id: str
    desired_state: Literal["running", "stopped"]
    webhooks: list[WebhookEndpointView]
    calls: CallPolicy = Field(default_factory=lambda: CallPolicy())
    created_at: Timestamp
    updated_at: Timestamp
    status: InstanceStatus | None = None


class InstanceList(BaseModel):
    instances: list[InstanceView]


class QrCode(BaseModel):
    """The QR to scan with WhatsApp → Linked devices, while the instance waits for pairing."""

    instance: str
    qr: str = Field(description="The raw QR payload; render it, or fetch `/qr.png` / `/qr.svg`.")
    expires_at: Timestamp | None = None
    refreshes: int = 0


class CommandAccepted(BaseModel):
    """A command durably queued on `WA_COMMANDS`; the connector executes it."""

    command_id: str
    status: Literal["accepted"] = "accepted"
    duplicate: bool = Field(description="True when this `Idempotency-Key` was already queued.")


class SendAnswer(BaseModel):
    """The answer to a send: `accepted` (queued; also after a `wait` that ran out), or the
    WhatsApp result `sent` / `failed` when `wait` saw it in time (`sending`: handed over, the
    result not recorded yet)."""

    command_id: str
    status: Literal["accepted", "sending", "sent", "failed"]
    duplicate: bool
    message_id: str | None = None
    chat: str | None = None
    error_code: str | None = None
    error: str | None = None


class PairAnswer(BaseModel):
    """`ready` with the code to type on the phone, or `accepted` when it did not arrive in time
    (poll the status, or watch for the `connection.pair_code` webhook)."""

    command_id: str
    status: Literal["accepted", "ready"]
    pair_code: str | None = None


class WaitQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    wait: float = Field(
        default=0,
        ge=0,
        le=120,
        description="Seconds to wait for the result (capped by the relay's WABUS_MAX_WAIT); "
        "0 answers as soon as the command is queued.",
    )


class ImageQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scale: int = Field(default=8, ge=1, le=32, description="Pixels per QR module.")


# webhook deliveries

ENDPOINT_KEY_PATTERN = r"^(global|[a-z0-9][a-z0-9_-]{0,62}/[a-z0-9][a-z0-9_-]{0,62})$"
"""`global` (the endpoint of `WABUS_WEBHOOK_URL`) or `<instance>/<endpoint id>`."""
DeliveryOutcome = Literal["delivered", "retrying", "dead", "disabled"]


class DeliveryFilter(BaseModel):
    """Query of `GET /v1/deliveries`; newest first, `before` pages on."""

    model_config = ConfigDict(extra="forbid")

    endpoint: str | None = Field(default=None, pattern=ENDPOINT_KEY_PATTERN)
    instance: str | None = Field(default=None, pattern=INSTANCE_ID_PATTERN)
    event_id: str | None = Field(default=None, pattern=EVENT_ID_PATTERN)
    outcome: DeliveryOutcome | None = None
    since: Instant | None = None
    until: Instant | None = None
    limit: int = Field(default=100, ge=1, le=1000)
    before: int | None = Field(
        default=None, ge=1, le=MAX_BIGINT, description="The `next` of the previous page."
    )


class DeliveryView(BaseModel):
    """One attempt to deliver one event to one endpoint."""

    id: int
    event_id: str
    event_seq: int
    instance: str
    event_type: str
    endpoint: str
    attempt: int
    outcome: DeliveryOutcome
    status_code: int | None
    latency_ms: float
    error: str | None
    next_attempt_at: Timestamp | None
    at: Timestamp
    trigger: Literal["schedule", "retry", "recover"]


class DeliveryList(BaseModel):
    deliveries: list[DeliveryView]
    next: int | None = Field(description="Pass as `before` for the next page; null at the end.")


class DeliveryRetry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_id: str = Field(pattern=EVENT_ID_PATTERN)
    endpoint: str = Field(pattern=ENDPOINT_KEY_PATTERN)


class DeliveryRetried(BaseModel):
    delivered: bool
    attempt: int
    outcome: DeliveryOutcome


class DeliveryRecover(BaseModel):
    model_config = ConfigDict(extra="forbid")

    endpoint: str = Field(pattern=ENDPOINT_KEY_PATTERN)
    since: Instant
    until: Instant | None = Field(default=None, description="Defaults to now.")


class RecoveryStarted(BaseModel):
    endpoint: str
    events: int = Field(description="Dead letters being delivered again.")


class EndpointRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    endpoint: str = Field(pattern=ENDPOINT_KEY_PATTERN)


class EndpointState(BaseModel):
    endpoint: str
    instance: str | None
    url: str
    events: list[str]
    disabled: bool
    disabled_reason: str | None = None


class EndpointList(BaseModel):
    endpoints: list[EndpointState]
