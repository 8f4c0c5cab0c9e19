"""Hand-written in-memory fakes of the relay's ports (`relay.stores.ports`): the route tests build
the real app on them (`create_app(settings, fakes.open)`) and read back what the routes did.

Each fake keeps the one rule of its port a route depends on — revisions and conditional writes,
message-id deduplication, one signature accepted once — and nothing else.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from relay.delivery.policy import Decision, Delivered
from relay.delivery.records import Attempt, DeliveryLog, DeliveryQuery, LoggedAttempt
from relay.delivery.service import EventGone, UnknownEndpoint
from relay.delivery.states import Disabled
from relay.delivery.targets import Target
from relay.stores.ports import (
    BusHealth,
    CommandBus,
    DeliveryControl,
    InstanceStore,
    Media,
    MediaStore,
    Records,
    ReplayGuard,
    RevisionConflict,
    Stored,
    Stores,
)
from relay.stores.queries import NoResponders, QueryPort
from schemas.queries import QueryAnswer
from wabus.settings import Settings


class FakeInstanceStore:
    """A bucket: one revision counter orders every write, as JetStream's sequence does."""

    def __init__(self) -> None:
        self.stored: dict[str, Stored] = {}
        self._revision = 0

    def put(self, instance: str, value: bytes) -> int:
        """Write as something other than the API would (no checks)."""
        self._revision += 1
        self.stored[instance] = Stored(instance, value, self._revision)
        return self._revision

    async def get(self, instance: str) -> Stored | None:
        return self.stored.get(instance)

    async def entries(self) -> list[Stored]:
        return sorted(self.stored.values(), key=lambda entry: entry.revision)

    async def revisions(self) -> dict[str, int]:
        return {key: entry.revision for key, entry in self.stored.items()}

    async def create(self, instance: str, value: bytes) -> int:
        if instance in self.stored:
            raise RevisionConflict(instance)
        return self.put(instance, value)

    async def update(self, instance: str, value: bytes, revision: int) -> int:
        self._check(instance, revision)
        return self.put(instance, value)

    async def delete(self, instance: str, revision: int) -> None:
        self._check(instance, revision)
        del self.stored[instance]

    def _check(self, instance: str, revision: int) -> None:
        current = self.stored.get(instance)
        if current is None or current.revision != revision:
            raise RevisionConflict(instance)


class FakeRecords:
    """What the connector wrote; `later` holds values it writes while a route waits."""

    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}
        self.later: dict[str, list[bytes]] = {}
        self.waits: list[tuple[str, float]] = []
        """Every wait: its key and the seconds it was given."""

    async def get(self, key: str) -> bytes | None:
        return self.values.get(key)

    async def wait(self, key: str, done: Callable[[bytes], bool], seconds: float) -> bytes | None:
        self.waits.append((key, seconds))
        current = self.values.get(key)
        last = None
        for value in [*([current] if current else []), *self.later.pop(key, [])]:
            self.values[key] = last = value
            if done(value):
                return value
        return last


@dataclass(frozen=True)
class Published:
    subject: str
    payload: bytes
    message_id: str

    @property
    def envelope(self) -> dict[str, Any]:
        decoded: dict[str, Any] = json.loads(self.payload)
        return decoded


class FakeCommandBus:
    """A stream that drops a message id it has stored already; `failure` is raised instead."""

    def __init__(self, max_payload: int = 1 << 20) -> None:
        self.max_payload = max_payload
        self.published: list[Published] = []
        """What was stored, duplicates left out."""
        self.failure: Exception | None = None

    async def publish(self, subject: str, payload: bytes, message_id: str) -> bool:
        if self.failure is not None:
            raise self.failure
        if any(sent.message_id == message_id for sent in self.published):
            return True
        self.published.append(Published(subject, payload, message_id))
        return False


class FakeReplayGuard:
    def __init__(self) -> None:
        self.seen: set[str] = set()

    async def first_seen(self, signature: str) -> bool:
        if signature in self.seen:
            return False
        self.seen.add(signature)
        return True


class FakeMediaStore:
    def __init__(self) -> None:
        self.media: dict[str, Media] = {}

    async def get(self, media_id: str) -> Media | None:
        return self.media.get(media_id)


class FakeHealth:
    def __init__(self) -> None:
        self.results = {"nats": True, "streams": True}

    async def checks(self) -> dict[str, bool]:
        return dict(self.results)


class FakeDeliveryLog:
    """Rows as the test sets them, newest first; every query kept."""

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self.rows: list[LoggedAttempt] = []
        self.queries: list[DeliveryQuery] = []

    async def record(self, attempt: Attempt) -> None:
        self.rows.insert(0, LoggedAttempt(len(self.rows) + 1, attempt))

    async def flush(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def query(self, query: DeliveryQuery) -> list[LoggedAttempt]:
        self.queries.append(query)
        return self.rows[: query.limit]

    async def latest(self, event_id: str, endpoint: str) -> Attempt | None:
        return next(
            (
                row.attempt
                for row in self.rows
                if (row.attempt.event_id, row.attempt.endpoint) == (event_id, endpoint)
            ),
            None,
        )

    async def delivered(self, endpoint: str, event_ids: list[str]) -> set[str]:
        return set()


class FakeEndpointStates:
    def __init__(self) -> None:
        self.off: dict[str, Disabled] = {}

    async def disabled(self, key: str) -> Disabled | None:
        return self.off.get(key)

    async def enable(self, key: str) -> bool:
        return self.off.pop(key, None) is not None


@dataclass(frozen=True)
class FakeDispatcher:
    target: Target


class FakeDeliveries:
    """Endpoints as the test lists them; retry answers `decision` for an event the log holds
    (`EventGone` for one in `gone`); recovery counts `dead_letters`."""

    def __init__(self, *targets: Target) -> None:
        self.targets = {target.key: target for target in targets}
        self.log = FakeDeliveryLog()
        self.states = FakeEndpointStates()
        self.decision: Decision = Delivered()
        self.gone: set[str] = set()
        self.dead_letters = 0
        self.retried: list[tuple[str, str]] = []
        self.recovered: list[tuple[str, datetime, datetime]] = []

    def endpoint(self, key: str) -> FakeDispatcher:
        if key not in self.targets:
            raise UnknownEndpoint(key)
        return FakeDispatcher(self.targets[key])

    def endpoints(self) -> list[Target]:
        return list(self.targets.values())

    async def retry(self, event_id: str, endpoint: str) -> tuple[Decision, int]:
        self.endpoint(endpoint)
        last = await self.log.latest(event_id, endpoint)
        if last is None:
            raise LookupError(f"no delivery of {event_id!r} to {endpoint!r} is logged")
        if event_id in self.gone:
            raise EventGone(f"event {event_id!r} is no longer in the events stream")
        self.retried.append((event_id, endpoint))
        return self.decision, last.attempt + 1

    async def recover(self, endpoint: str, since: datetime, until: datetime) -> int:
        self.endpoint(endpoint)
        self.recovered.append((endpoint, since, until))
        return self.dead_letters


@dataclass(frozen=True)
class Asked:
    """One query as the connector got it."""

    instance: str
    name: str
    payload: dict[str, Any]
    seconds: float


class FakeQueries:
    """A connector answering from `answers`, by query name: a `QueryAnswer` as it is, a dict as
    the data of an `ok` answer, an exception (`NoResponders`, `QueryTimeout`,
    `UnreadableAnswer`, a NATS error) raised instead. A query left out of the table has no
    responders, as when no connector runs the instance. Every query is kept in `asked`."""

    def __init__(self) -> None:
        self.answers: dict[str, QueryAnswer | dict[str, Any] | Exception] = {}
        self.asked: list[Asked] = []

    async def ask(
        self, instance: str, name: str, payload: dict[str, Any], seconds: float
    ) -> QueryAnswer:
        self.asked.append(Asked(instance, name, payload, seconds))
        answer = self.answers.get(name)
        if answer is None:
            raise NoResponders(f"wa.req.{instance}.{name}")
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, QueryAnswer):
            return answer
        return QueryAnswer(ok=True, data=answer)


@dataclass
class Fakes:
    """One fake of every port; `open` is the `OpenStores` that hands them to the app."""

    instances: FakeInstanceStore = field(default_factory=FakeInstanceStore)
    status: FakeRecords = field(default_factory=FakeRecords)
    sends: FakeRecords = field(default_factory=FakeRecords)
    commands: FakeCommandBus = field(default_factory=FakeCommandBus)
    replay: FakeReplayGuard = field(default_factory=FakeReplayGuard)
    media: FakeMediaStore = field(default_factory=FakeMediaStore)
    deliveries: FakeDeliveries = field(default_factory=FakeDeliveries)
    health: FakeHealth = field(default_factory=FakeHealth)
    queries: FakeQueries = field(default_factory=FakeQueries)
    opened: int = 0
    closed: int = 0

    @contextlib.asynccontextmanager
    async def open(self, settings: Settings) -> AsyncIterator[Stores]:
        self.opened += 1
        try:
            yield Stores(
                instances=self.instances,
                status=self.status,
                sends=self.sends,
                commands=self.commands,
                replay=self.replay,
                media=self.media,
                deliveries=self.deliveries,
                health=self.health,
                queries=self.queries,
            )
        finally:
            self.closed += 1


_instances: InstanceStore = FakeInstanceStore()
_records: Records = FakeRecords()
_commands: CommandBus = FakeCommandBus()
_replay: ReplayGuard = FakeReplayGuard()
_media: MediaStore = FakeMediaStore()
_health: BusHealth = FakeHealth()
_deliveries: DeliveryControl = FakeDeliveries()
_queries: QueryPort = FakeQueries()
_log: DeliveryLog = FakeDeliveryLog()
