"""What the delivery log keeps: one `Attempt` per HTTP request made to an endpoint.

The `DeliveryLog` port has two adapters: Postgres (`relay.delivery.log`) and `NullDeliveryLog`
for a relay without `DATABASE_URL`, which still delivers but remembers nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

GLOBAL_ENDPOINT = "global"
"""The endpoint key of `WABUS_WEBHOOK_URL`; a per-instance endpoint is `<instance>/<id>`."""


def endpoint_key(instance: str | None, endpoint_id: str | None) -> str:
    return GLOBAL_ENDPOINT if instance is None else f"{instance}/{endpoint_id}"


class Outcome(StrEnum):
    DELIVERED = "delivered"
    """2xx."""
    RETRYING = "retrying"
    """Failed; another attempt is scheduled at `next_attempt_at`."""
    DEAD = "dead"
    """Failed on the last attempt: the event went to `WA_DLQ`."""
    DISABLED = "disabled"
    """410 Gone: the endpoint is disabled and gets nothing more until re-enabled."""


class Trigger(StrEnum):
    SCHEDULE = "schedule"
    """The dispatcher's own attempts, first delivery and scheduled retries."""
    RETRY = "retry"
    """An operator's retry of one event."""
    RECOVER = "recover"
    """An operator's recovery of an endpoint's dead letters over a time range."""


@dataclass(frozen=True)
class Attempt:
    """One HTTP request to one endpoint for one event."""

    event_id: str
    event_seq: int
    """The event's sequence in `WA_EVENTS` (0 when unknown): what a retry reads it back by."""
    instance: str
    event_type: str
    endpoint: str
    attempt: int
    outcome: Outcome
    status_code: int | None
    latency_ms: float
    error: str | None
    next_attempt_at: datetime | None
    at: datetime
    trigger: Trigger = Trigger.SCHEDULE


@dataclass(frozen=True)
class DeliveryQuery:
    """Filters of `GET /v1/deliveries`; every field optional, newest first."""

    endpoint: str | None = None
    instance: str | None = None
    event_id: str | None = None
    outcome: Outcome | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 100
    before: int | None = None
    """Rows with an id lower than this (the `next` cursor of the previous page)."""


@dataclass(frozen=True)
class LoggedAttempt:
    """An attempt as read back, with its row id (the pagination cursor)."""

    id: int
    attempt: Attempt


class DeliveryLog(Protocol):
    @property
    def enabled(self) -> bool: ...

    async def record(self, attempt: Attempt) -> None:
        """Queue one attempt; written in batches, so the hot path never waits on Postgres."""

    async def flush(self) -> None:
        """Write everything queued so far."""

    async def close(self) -> None: ...

    async def query(self, query: DeliveryQuery) -> list[LoggedAttempt]: ...

    async def latest(self, event_id: str, endpoint: str) -> Attempt | None:
        """The last attempt for this event at this endpoint."""

    async def delivered(self, endpoint: str, event_ids: list[str]) -> set[str]:
        """Which of `event_ids` have a successful attempt at `endpoint`."""


class NullDeliveryLog:
    """The log when `DATABASE_URL` is unset: deliveries go on, nothing is remembered."""

    enabled = False

    async def record(self, attempt: Attempt) -> None:
        return None

    async def flush(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def query(self, query: DeliveryQuery) -> list[LoggedAttempt]:
        return []

    async def latest(self, event_id: str, endpoint: str) -> Attempt | None:
        return None

    async def delivered(self, endpoint: str, event_ids: list[str]) -> set[str]:
        return set()


_: DeliveryLog = NullDeliveryLog()
