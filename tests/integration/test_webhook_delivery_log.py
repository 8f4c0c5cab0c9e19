"""The delivery log on a real Postgres (a throwaway database per test): migrations, batched
writes that survive a refused write, and the deliveries API of a relay that keeps the log."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from ipaddress import ip_network

import asyncpg
import pytest
from nats.aio.client import Client as NATS
from pydantic import SecretStr

from relay.client import RelayClient, RelayError
from relay.delivery.log import PostgresDeliveryLog
from relay.delivery.migrate import migrate, migrations
from relay.delivery.records import Attempt, DeliveryQuery, Outcome, Trigger
from tests.integration.test_webhook_delivery import publish, receiving
from tests.support import Receiver, eventually
from wabus.settings import Settings

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.fixture
def settings(settings: Settings, database_url: str) -> Settings:
    """A relay keeping its log in this test's own database; receivers on loopback."""
    return settings.model_copy(
        update={
            "database_url": SecretStr(database_url),
            "webhook_allow_cidrs": (ip_network("127.0.0.0/8"),),
        }
    )


def attempt(number: int, **fields: object) -> Attempt:
    values: dict[str, object] = {
        "event_id": f"evt_{number}",
        "event_seq": number,
        "instance": "acme",
        "event_type": "message.received",
        "endpoint": "global",
        "attempt": 1,
        "outcome": Outcome.DELIVERED,
        "status_code": 200,
        "latency_ms": 1.5,
        "error": None,
        "next_attempt_at": None,
        "at": NOW + timedelta(seconds=number),
        "trigger": Trigger.SCHEDULE,
    }
    values.update(fields)
    return Attempt(**values)  # type: ignore[arg-type]


async def test_migrations_apply_once_even_when_replicas_start_together(database_url: str) -> None:
    connections = [await asyncpg.connect(database_url) for _ in range(3)]
    try:
        applied = await asyncio.gather(*(migrate(c) for c in connections))
        assert sorted(len(versions) for versions in applied) == [0, 0, len(migrations())]
        assert await migrate(connections[0]) == []
        rows = await connections[0].fetch("SELECT version FROM schema_migrations")
        assert [row["version"] for row in rows] == [m.version for m in migrations()]
    finally:
        for connection in connections:
            await connection.close()


async def test_attempts_are_written_in_batches_and_read_back_with_filters(
    database_url: str,
) -> None:
    log = await PostgresDeliveryLog.open(database_url)
    try:
        for number in range(20_000):
            await log.record(attempt(number, endpoint="global" if number % 2 else "acme/crm"))
        await log.record(attempt(7, outcome=Outcome.RETRYING, status_code=500, attempt=2))
        assert await log.count() == 20_001
        page = await log.query(DeliveryQuery(endpoint="acme/crm", limit=3))
        assert [row.attempt.event_id for row in page] == ["evt_19998", "evt_19996", "evt_19994"]
        following = await log.query(DeliveryQuery(endpoint="acme/crm", limit=2, before=page[-1].id))
        assert [row.attempt.event_id for row in following] == ["evt_19992", "evt_19990"]
        retrying = await log.query(DeliveryQuery(outcome=Outcome.RETRYING))
        assert [(r.attempt.event_id, r.attempt.status_code) for r in retrying] == [("evt_7", 500)]
        window = await log.query(
            DeliveryQuery(since=NOW + timedelta(seconds=10), until=NOW + timedelta(seconds=12))
        )
        assert sorted(row.attempt.event_id for row in window) == ["evt_10", "evt_11"]
        latest = await log.latest("evt_7", "global")
        assert latest is not None
        assert latest.outcome is Outcome.RETRYING
        assert await log.delivered("global", ["evt_1", "evt_2", "evt_3"]) == {"evt_1", "evt_3"}
    finally:
        await log.close()


async def test_a_refused_write_is_kept_and_written_once_postgres_takes_it(
    database_url: str,
) -> None:
    log = await PostgresDeliveryLog.open(database_url)
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute("ALTER TABLE webhook_deliveries RENAME TO webhook_deliveries_away")
        for number in range(100):
            await log.record(attempt(number))
        await asyncio.sleep(0.3)  # the writer tried and failed at least once
        await admin.execute("ALTER TABLE webhook_deliveries_away RENAME TO webhook_deliveries")
        assert await log.count() == 100
    finally:
        await admin.close()
        await log.close()


async def test_a_relay_logs_every_attempt_and_retries_one_event_on_request(
    settings: Settings, nc: NATS, webhook_secret: str
) -> None:
    calls: Counter[str] = Counter()

    def fail_first(event: dict[str, object]) -> int:
        calls[str(event["id"])] += 1
        return 503 if calls[str(event["id"])] == 1 else 200

    receiver = Receiver(webhook_secret, respond=fail_first)
    async with receiving(receiver, settings, nc) as (s, client):
        event_id = await publish(nc, s, 1)
        await eventually(lambda: _outcomes(client, event_id, ["delivered", "retrying"]))
        [newest, oldest] = (await client.deliveries(event_id=event_id))["deliveries"]
        assert (oldest["attempt"], oldest["status_code"], oldest["outcome"]) == (1, 503, "retrying")
        assert oldest["next_attempt_at"] is not None
        assert (newest["attempt"], newest["status_code"], newest["trigger"]) == (
            2,
            200,
            "schedule",
        )
        assert newest["latency_ms"] > 0
        retried = await client.retry_delivery(event_id, "global")
        assert retried == {"delivered": True, "attempt": 3, "outcome": "delivered"}
        assert calls[event_id] == 3
        with pytest.raises(RelayError) as unknown:
            await client.retry_delivery("evt_nope", "global")
        assert unknown.value.status == 404


async def _outcomes(client: RelayClient, event_id: str, expected: list[str]) -> bool:
    rows = (await client.deliveries(event_id=event_id))["deliveries"]
    return [row["outcome"] for row in rows] == expected


async def test_recovery_skips_dead_letters_delivered_since(
    settings: Settings, nc: NATS, webhook_secret: str
) -> None:
    broken = True
    receiver = Receiver(webhook_secret, respond=lambda event: 500 if broken else 200)
    since = datetime.now(UTC) - timedelta(seconds=1)
    async with receiving(receiver, settings, nc, webhook_retry_schedule=(0.0,)) as (s, client):
        first, second = await publish(nc, s, 1), await publish(nc, s, 2)
        await eventually(lambda: _dead(client, 2))
        broken = False
        assert (await client.retry_delivery(first, "global"))["delivered"] is True
        assert await client.recover("global", since.isoformat()) == {
            "endpoint": "global",
            "events": 1,
        }
        await eventually(lambda: _outcomes(client, second, ["delivered", "dead"]))
        outcomes = await client.deliveries(event_id=second)
        assert outcomes["deliveries"][0]["trigger"] == "recover"


async def _dead(client: RelayClient, count: int) -> bool:
    return len((await client.deliveries(outcome="dead"))["deliveries"]) >= count
