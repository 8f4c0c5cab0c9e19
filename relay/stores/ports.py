"""What the relay's routes need from NATS, as small ports: the routes depend on these, never on a
NATS object, so each route runs in-process on fakes as well as on the NATS adapters.

The NATS adapters are in `relay.stores.nats_adapters`. A port's adapter lets transport failures
through as `nats.errors.Error`, which the app answers with 503 `bus_unavailable` (one mapping, in
`relay.problems`); what a route decides on (a lost conditional write, a message over the bus's
limit, something absent) comes back as a value or as one of the errors below.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from relay.delivery.policy import Decision
    from relay.delivery.records import DeliveryLog
    from relay.delivery.states import Disabled
    from relay.delivery.targets import Target
    from relay.stores.queries import QueryPort


@dataclass(frozen=True)
class Stored:
    """A key's current value and the revision that wrote it; revisions order every write of a
    bucket, which is what a conditional write and the quota's race check go by."""

    key: str
    value: bytes
    revision: int


@dataclass(frozen=True)
class Media:
    """Inbound media as the connector stored it."""

    data: bytes
    mimetype: str
    """As the connector recorded it; the route checks it before using it as a content type."""


class RevisionConflict(Exception):
    """A conditional write lost: the key existed already (create), or another write came after
    the revision it was based on (update, delete)."""


class PayloadTooLarge(Exception):
    """The bus refused a message over its `max_payload`."""


class InstanceStore(Protocol):
    """Instance configurations (JSON of `InstanceConfig`), keyed by instance id: the relay writes
    them, connectors and webhook dispatchers watch them."""

    async def get(self, instance: str) -> Stored | None:
        """The current configuration, or None when there is none (never written, or deleted)."""

    async def entries(self) -> list[Stored]:
        """Every current configuration."""

    async def revisions(self) -> dict[str, int]:
        """Every instance's latest revision, without the values (cheaper than `entries`)."""

    async def create(self, instance: str, value: bytes) -> int:
        """Write a new configuration; its revision. `RevisionConflict` when one exists."""

    async def update(self, instance: str, value: bytes, revision: int) -> int:
        """Replace the configuration written at `revision`; the new revision.
        `RevisionConflict` when it changed since."""

    async def delete(self, instance: str, revision: int) -> None:
        """Delete the configuration written at `revision`; `RevisionConflict` when it changed."""


class Records(Protocol):
    """A bucket another service writes and the relay only reads: the connector's instance
    statuses (by instance id) and send records (by `send_record_key`)."""

    async def get(self, key: str) -> bytes | None:
        """The current value, or None when there is none."""

    async def wait(self, key: str, done: Callable[[bytes], bool], seconds: float) -> bytes | None:
        """The first value of `key` (the current one included) for which `done` holds, or the
        last value seen (or None) once `seconds` have passed: an answer, never a hang."""


class CommandBus(Protocol):
    """Where commands go for the connector: a stream that drops a message id it has seen."""

    @property
    def max_payload(self) -> int:
        """The largest message the bus takes, in bytes."""

    async def publish(self, subject: str, payload: bytes, message_id: str) -> bool:
        """Publish and return once the bus has stored it (durable from then on); True when
        `message_id` was seen before and this publish was dropped as a duplicate.
        `PayloadTooLarge` when the bus refused its size."""


class ReplayGuard(Protocol):
    """Signatures of accepted requests, shared by every relay replica for the timestamp window."""

    async def first_seen(self, signature: str) -> bool:
        """Record `signature`; False when it was recorded already (a replay)."""


class MediaStore(Protocol):
    """Inbound media the connector stored, by media id."""

    async def get(self, media_id: str) -> Media | None:
        """The media, or None when there is no such media (or no store yet)."""


Unsubscribe = Callable[[], Awaitable[None]]


class EventFeed(Protocol):
    """Events as they are published (a core NATS subscription: no stream, no consumer, no
    replay), for the dashboard's live view."""

    async def subscribe(self, subject: str, deliver: Callable[[bytes], None]) -> Unsubscribe:
        """Call `deliver` with each message's payload on `subject` (wildcards allowed) until the
        returned function is awaited. `deliver` must not block."""


class BusHealth(Protocol):
    """What `/readyz` reports about the bus."""

    async def checks(self) -> dict[str, bool]:
        """Each check's name and whether it passes."""


class EndpointSwitch(Protocol):
    """Which webhook endpoints are disabled (after a 410 Gone)."""

    async def disabled(self, key: str) -> Disabled | None: ...

    async def enable(self, key: str) -> bool:
        """Enable `key` again; False when it was not disabled."""


class Dispatching(Protocol):
    """A running endpoint dispatcher, as the routes see it."""

    @property
    def target(self) -> Target: ...


class DeliveryControl(Protocol):
    """The operator's side of webhook delivery, as the routes use it (`relay.delivery.service.
    Deliveries` in production): endpoints, the delivery log, retry one event, recover a range."""

    @property
    def log(self) -> DeliveryLog: ...

    @property
    def states(self) -> EndpointSwitch: ...

    def endpoint(self, key: str) -> Dispatching:
        """The endpoint's dispatcher; `UnknownEndpoint` when this relay runs none of that key."""

    def endpoints(self) -> list[Target]: ...

    async def retry(self, event_id: str, endpoint: str) -> tuple[Decision, int]:
        """Deliver one logged event again, now: the decision and the attempt number.
        `EventGone` when it expired, `LookupError` when no delivery of it is logged there."""

    async def recover(self, endpoint: str, since: datetime, until: datetime) -> int:
        """Deliver again, in the background, the endpoint's dead letters of [since, until);
        how many."""


@dataclass(frozen=True)
class Stores:
    """Everything the routes reach beyond the process, opened together for the app's lifetime."""

    instances: InstanceStore
    status: Records
    """Instance status, which the connector writes."""
    sends: Records
    """Send records, which the connector writes."""
    commands: CommandBus
    replay: ReplayGuard
    media: MediaStore
    deliveries: DeliveryControl
    health: BusHealth
    queries: QueryPort
    """Queries to the connector running an instance (`relay.stores.queries`)."""
    feed: EventFeed | None = None
    """Live events for the dashboard; None where there is no bus to follow (route tests)."""
