"""`PostgresDeliveryLog` on a real Postgres, a throwaway database per test: migrations, batched
writes that survive refused writes, the read queries, and the bounds on what it keeps in memory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from relay.delivery.log import PostgresDeliveryLog
from relay.delivery.migrate import migrate, migrations
from relay.delivery.records import (
    Attempt,
    DeliveryLog,
    DeliveryQuery,
    NullDeliveryLog,
    Outcome,
    Trigger,
)
from relay.delivery.retention import prune
from tests.support import eventually

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
AWAY = "ALTER TABLE webhook_deliveries RENAME TO webhook_deliveries_away"
BACK = "ALTER TABLE webhook_deliveries_away RENAME TO webhook_deliveries"


def attempt(number: int, **fields: Any) -> Attempt:
    """Attempt `number` of the test data: event `evt_<number>`, `number` seconds after NOW."""
    values: dict[str, Any] = {
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
    return Attempt(**values)


@asynccontextmanager
async def opened(url: str, **options: Any) -> AsyncIterator[PostgresDeliveryLog]:
    delivery_log = await PostgresDeliveryLog.open(url, **options)
    try:
        yield delivery_log
    finally:
        await delivery_log.close()


@asynccontextmanager
async def admin(url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(url)
    try:
        yield connection
    finally:
        await connection.close()


async def written_ids(
    connection: asyncpg.Connection, table: str = "webhook_deliveries"
) -> list[str]:
    rows = await connection.fetch(f"SELECT event_id FROM {table} ORDER BY id")  # noqa: S608
    return [row["event_id"] for row in rows]


async def test_migrations_apply_once_and_reopening_changes_nothing(database_url: str) -> None:
    async with opened(database_url):
        pass
    async with admin(database_url) as connection:
        first = [tuple(row) for row in await connection.fetch("SELECT * FROM wabus_migrations")]
        async with opened(database_url):
            pass
        assert await migrate(connection) == []
        again = [tuple(row) for row in await connection.fetch("SELECT * FROM wabus_migrations")]
        former = await connection.fetchval("SELECT to_regclass('schema_migrations')")
        indexes = await connection.fetch(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'webhook_deliveries'"
        )
    assert [row[:3] for row in first] == [("relay", 1, "deliveries"), ("relay", 2, "retention")]
    assert again == first  # same rows, same applied_at: nothing ran twice
    assert [m.version for m in migrations()] == [1, 2]
    assert former is None  # a generic name, maybe someone else's in a shared database: not ours
    definitions = {row["indexdef"].split(" USING btree ")[1] for row in indexes}
    assert definitions == {
        "(id)",
        "(endpoint, id)",
        "(instance, id)",
        "(outcome, id)",
        "(event_id, endpoint, id)",
        "(endpoint, at)",
        "(at)",
    }


async def test_a_database_migrated_by_an_earlier_wabus_is_adopted_once(database_url: str) -> None:
    """Earlier versions kept their record in `schema_migrations`: its rows of our migrations move
    to `wabus_migrations`, other software's rows there are none of our business."""
    async with admin(database_url) as connection:
        await connection.execute(
            "CREATE TABLE schema_migrations (version int PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        await connection.execute(migrations()[0].sql)  # what the earlier wabus applied
        await connection.execute(
            "INSERT INTO schema_migrations (version, name) VALUES (1, 'deliveries'), (7, 'theirs')"
        )
        applied = await migrate(connection)
        ours = await connection.fetch(
            "SELECT version, name FROM wabus_migrations WHERE component = 'relay' ORDER BY 1"
        )
        theirs = await connection.fetch("SELECT version FROM schema_migrations ORDER BY 1")
    assert applied == [2]  # 001 was adopted, not run again (it would fail: the table exists)
    assert [tuple(row) for row in ours] == [(1, "deliveries"), (2, "retention")]
    assert [row["version"] for row in theirs] == [1, 7]  # left as it was


async def test_rows_past_the_retention_are_pruned_in_batches_and_newer_ones_kept(
    database_url: str,
) -> None:
    old = [attempt(n, at=NOW - timedelta(days=40, seconds=n)) for n in range(23)]
    recent = [attempt(100 + n, at=NOW - timedelta(days=1, seconds=n)) for n in range(5)]
    async with opened(database_url) as delivery_log:
        for row in old + recent:
            await delivery_log.record(row)
        await delivery_log.flush()
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
        try:
            deleted = await prune(pool, NOW - timedelta(days=30), batch=7)
            again = await prune(pool, NOW - timedelta(days=30), batch=7)
        finally:
            await pool.close()
        async with admin(database_url) as connection:
            kept = await written_ids(connection)
    assert (deleted, again) == (23, 0)
    assert sorted(kept) == sorted(row.event_id for row in recent)


async def test_a_log_opened_with_a_retention_prunes_at_once(database_url: str) -> None:
    async with opened(database_url) as delivery_log:
        await delivery_log.record(attempt(1, at=datetime.now(UTC) - timedelta(days=31)))
        await delivery_log.record(attempt(2, at=datetime.now(UTC)))
    async with opened(database_url, retention=timedelta(days=30)), admin(database_url) as c:
        await eventually(lambda: _ids_are(c, ["evt_2"]))


async def _ids_are(connection: asyncpg.Connection, ids: list[str]) -> bool:
    return await written_ids(connection) == ids


async def test_replicas_opening_a_fresh_database_together_all_succeed(database_url: str) -> None:
    connections = [await asyncpg.connect(database_url) for _ in range(2)]
    try:
        logs, applied = await asyncio.gather(  # two relays and two bare migrations at once
            asyncio.gather(
                PostgresDeliveryLog.open(database_url), PostgresDeliveryLog.open(database_url)
            ),
            asyncio.gather(*(migrate(connection) for connection in connections)),
        )
        versions = await connections[0].fetch("SELECT version FROM wabus_migrations")
    finally:
        for connection in connections:
            await connection.close()
    try:
        assert [row["version"] for row in versions] == [1, 2]
        assert sum(len(versions) for versions in applied) <= len(migrations())
        await logs[0].record(attempt(1))
        await logs[1].record(attempt(2))
        await logs[0].flush()
        assert await logs[1].count() == 2
    finally:
        for delivery_log in logs:
            await delivery_log.close()


async def test_every_field_round_trips_and_each_filter_selects(database_url: str) -> None:
    recorded = [
        attempt(
            number,
            endpoint="global" if number % 2 else "acme/crm",
            instance="acme" if number % 3 else "beta",
        )
        for number in range(1200)
    ]
    retried = attempt(
        7,
        attempt=2,
        outcome=Outcome.RETRYING,
        status_code=503,
        latency_ms=250.25,
        error="HTTP 503",
        next_attempt_at=NOW + timedelta(minutes=1),
        at=NOW + timedelta(seconds=2000),
        trigger=Trigger.RETRY,
    )
    async with opened(database_url) as delivery_log:
        for one in [*recorded, retried]:
            await delivery_log.record(one)
        await delivery_log.flush()
        assert delivery_log.pending == 0

        newest = await delivery_log.query(DeliveryQuery(limit=2))
        assert [row.attempt for row in newest] == [retried, recorded[-1]]
        assert newest[0].id > newest[1].id

        by_endpoint = await delivery_log.query(DeliveryQuery(endpoint="acme/crm", limit=3))
        assert [r.attempt.event_id for r in by_endpoint] == ["evt_1198", "evt_1196", "evt_1194"]
        page_two = await delivery_log.query(
            DeliveryQuery(endpoint="acme/crm", limit=3, before=by_endpoint[-1].id)
        )
        assert [r.attempt.event_id for r in page_two] == ["evt_1192", "evt_1190", "evt_1188"]

        by_instance = await delivery_log.query(DeliveryQuery(instance="beta", limit=2))
        assert [r.attempt.event_id for r in by_instance] == ["evt_1197", "evt_1194"]

        by_event = await delivery_log.query(DeliveryQuery(event_id="evt_7"))
        assert [r.attempt for r in by_event] == [retried, recorded[7]]

        by_outcome = await delivery_log.query(DeliveryQuery(outcome=Outcome.RETRYING))
        assert [r.attempt for r in by_outcome] == [retried]

        window = await delivery_log.query(
            DeliveryQuery(since=NOW + timedelta(seconds=10), until=NOW + timedelta(seconds=13))
        )
        assert [r.attempt.event_id for r in window] == ["evt_12", "evt_11", "evt_10"]
        since = await delivery_log.query(DeliveryQuery(since=NOW + timedelta(seconds=1198)))
        assert [r.attempt.event_id for r in since] == ["evt_7", "evt_1199", "evt_1198"]
        until = await delivery_log.query(DeliveryQuery(until=NOW + timedelta(seconds=2)))
        assert [r.attempt.event_id for r in until] == ["evt_1", "evt_0"]

        combined = await delivery_log.query(
            DeliveryQuery(
                endpoint="global",
                instance="beta",
                outcome=Outcome.DELIVERED,
                until=NOW + timedelta(seconds=20),
            )
        )
        assert [r.attempt.event_id for r in combined] == ["evt_15", "evt_9", "evt_3"]

        everything = await delivery_log.query(DeliveryQuery(limit=5000))
        assert len(everything) == 1000  # the cap
        assert everything[-1].attempt.event_id == "evt_201"
        rest = await delivery_log.query(DeliveryQuery(limit=5000, before=everything[-1].id))
        assert [r.attempt.event_id for r in rest] == [f"evt_{n}" for n in range(200, -1, -1)]
        assert await delivery_log.query(DeliveryQuery(event_id="evt_nope")) == []


async def test_latest_is_the_last_attempt_written(database_url: str) -> None:
    async with opened(database_url) as delivery_log:
        await delivery_log.record(attempt(1, outcome=Outcome.RETRYING, status_code=500))
        await delivery_log.record(attempt(1, endpoint="acme/crm", attempt=5))
        # written after, though stamped earlier: still the latest (by id)
        await delivery_log.record(attempt(1, attempt=2, at=NOW, outcome=Outcome.DEAD))
        latest = await delivery_log.latest("evt_1", "global")
        assert latest == attempt(1, attempt=2, at=NOW, outcome=Outcome.DEAD)
        other = await delivery_log.latest("evt_1", "acme/crm")
        assert other is not None
        assert other.attempt == 5
        assert await delivery_log.latest("evt_2", "global") is None
        assert await delivery_log.latest("evt_1", "acme/none") is None


async def test_delivered_is_the_subset_delivered_at_that_endpoint(database_url: str) -> None:
    async with opened(database_url) as delivery_log:
        await delivery_log.record(attempt(1))
        await delivery_log.record(attempt(2, outcome=Outcome.DEAD))
        await delivery_log.record(attempt(3, outcome=Outcome.RETRYING))
        await delivery_log.record(attempt(3, attempt=2))
        await delivery_log.record(attempt(4, endpoint="acme/crm"))
        await delivery_log.record(attempt(5, outcome=Outcome.DISABLED))
        asked = ["evt_1", "evt_2", "evt_3", "evt_4", "evt_5", "evt_6"]
        assert await delivery_log.delivered("global", asked) == {"evt_1", "evt_3"}
        assert await delivery_log.delivered("acme/crm", asked) == {"evt_4"}
        assert await delivery_log.delivered("global", []) == set()


async def test_many_rows_recorded_quickly_are_all_written_by_the_writer(
    database_url: str,
) -> None:
    async with admin(database_url) as connection, opened(database_url) as delivery_log:
        for number in range(20_000):
            await delivery_log.record(attempt(number, endpoint=f"acme/{number % 7}"))
        # no flush: the writer alone gets them there, and nothing is pending before it has
        await eventually(lambda: _nothing_pending(delivery_log))
        count, distinct = await connection.fetchrow(
            "SELECT count(*), count(DISTINCT event_id) FROM webhook_deliveries"
        )
        assert (count, distinct) == (20_000, 20_000)


async def test_a_refused_write_is_retried_and_nothing_is_lost(database_url: str) -> None:
    async with (
        admin(database_url) as connection,
        opened(database_url, batch_size=100, flush_interval=0.02) as delivery_log,
    ):
        await connection.execute(AWAY)
        for number in range(500):
            await delivery_log.record(attempt(number))  # never waits: the buffer takes them
        await delivery_log.flush()  # refused, not raised
        await asyncio.sleep(0.2)  # and the writer tries on its own and is refused too
        assert delivery_log.pending == 500
        assert await written_ids(connection, "webhook_deliveries_away") == []
        await connection.execute(BACK)
        await eventually(lambda: _nothing_pending(delivery_log))  # no flush: the writer retries
        ids = await written_ids(connection)
        assert ids == [f"evt_{number}" for number in range(500)]  # in order, once each


async def test_writes_go_on_after_postgres_drops_the_connections(database_url: str) -> None:
    async with (
        admin(database_url) as connection,
        opened(database_url, flush_interval=0.02) as delivery_log,
    ):
        await delivery_log.record(attempt(0))
        await delivery_log.flush()
        for number in range(1, 300):
            await delivery_log.record(attempt(number))
        killed = await connection.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        assert killed >= 1
        await delivery_log.flush()  # on a dead connection it fails, and the writer retries:
        # rows stay pending until Postgres has committed them, a batch being written included
        await eventually(lambda: _nothing_pending(delivery_log))
        assert await written_ids(connection) == [f"evt_{number}" for number in range(300)]


async def _nothing_pending(delivery_log: PostgresDeliveryLog) -> bool:
    return delivery_log.pending == 0


async def test_a_batch_on_its_way_is_pending_and_flush_waits_for_it(database_url: str) -> None:
    async with (
        admin(database_url) as connection,
        admin(database_url) as watcher,
        opened(database_url, flush_interval=0.02) as delivery_log,
    ):
        async with connection.transaction():
            await connection.execute("LOCK TABLE webhook_deliveries IN ACCESS EXCLUSIVE MODE")
            for number in range(300):
                await delivery_log.record(attempt(number))

            async def write_blocked() -> bool:  # the writer took the batch and waits
                waiting = await watcher.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock' AND query LIKE '%webhook_deliveries%'"
                )
                return bool(waiting)

            await eventually(write_blocked)
            assert delivery_log.pending == 300
            flushed = asyncio.create_task(delivery_log.flush())
            await asyncio.sleep(0)  # as much as a flush with nothing to wait for needs
            assert not flushed.done()
        await flushed  # the lock is gone, the batch in, and then the flush
        assert delivery_log.pending == 0
        assert await written_ids(connection) == [f"evt_{number}" for number in range(300)]


async def test_a_connection_lost_just_after_a_write_does_not_write_it_twice(
    database_url: str,
) -> None:
    armed = False

    async def reset(connection: asyncpg.Connection) -> None:  # as the pool takes it back
        nonlocal armed
        if armed:  # the backend ends after the COPY committed, before the connection is reset
            armed = False
            await connection.execute("SELECT pg_terminate_backend(pg_backend_pid())")

    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1, reset=reset)
    async with pool.acquire() as connection:
        await migrate(connection)
    delivery_log = PostgresDeliveryLog(pool)  # no writer: only flush() writes
    try:
        for number in range(10):
            await delivery_log.record(attempt(number))
        armed = True
        await delivery_log.flush()
        assert not armed  # the connection did go, after the write
        assert delivery_log.pending == 0
        await delivery_log.flush()
    finally:
        await delivery_log.close()
    async with admin(database_url) as connection:
        assert await written_ids(connection) == [f"evt_{number}" for number in range(10)]


async def test_past_its_cap_the_buffer_drops_the_oldest(database_url: str) -> None:
    async with (
        admin(database_url) as connection,
        opened(database_url, batch_size=10, max_pending=50) as delivery_log,
    ):
        await connection.execute(AWAY)
        for number in range(200):
            await delivery_log.record(attempt(number))
            assert delivery_log.pending <= 50
        await connection.execute(BACK)
        await delivery_log.flush()
        assert delivery_log.pending == 0
        assert await written_ids(connection) == [f"evt_{number}" for number in range(150, 200)]


async def test_a_row_postgres_cannot_take_is_dropped_alone(database_url: str) -> None:
    async with admin(database_url) as connection, opened(database_url) as delivery_log:
        for number in range(100):
            if number == 37:
                await delivery_log.record(attempt(number, event_seq=2**70))  # over bigint
            else:
                await delivery_log.record(attempt(number))
        await delivery_log.record(attempt(100, error="bad\x00byte"))
        await delivery_log.flush()
        assert delivery_log.pending == 0
        ids = await written_ids(connection)
        assert ids == [f"evt_{number}" for number in range(101) if number != 37]
        stored = await connection.fetchval(
            "SELECT error FROM webhook_deliveries WHERE event_id = 'evt_100'"
        )
        assert stored == "bad\ufffdbyte"


async def test_close_writes_what_is_pending_and_later_records_go_nowhere(
    database_url: str,
) -> None:
    delivery_log = await PostgresDeliveryLog.open(database_url, flush_interval=60)
    for number in range(25):
        await delivery_log.record(attempt(number))
    await delivery_log.close()
    await delivery_log.record(attempt(99))  # no error, nothing written
    await delivery_log.close()
    async with admin(database_url) as connection:
        assert await written_ids(connection) == [f"evt_{number}" for number in range(25)]


async def test_the_password_of_the_dsn_is_never_logged(
    database_url: str, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    scheme, _, rest = database_url.partition("://")
    user, _, host = rest.partition("@")
    secret = "pw-must-not-leak-31337"
    with_password = f"{scheme}://{user.split(':')[0]}:{secret}@{host}"
    async with (
        admin(database_url) as connection,
        opened(with_password, flush_interval=0.01) as delivery_log,
    ):
        await connection.execute(AWAY)
        await delivery_log.record(attempt(1))
        await delivery_log.flush()
        await connection.execute(BACK)
    captured = capsys.readouterr()
    logged = captured.out + captured.err + caplog.text
    assert "delivery log write failed" in logged
    assert "webhook_deliveries" in logged  # the error itself is there
    assert secret not in logged


async def test_both_adapters_fit_the_port(database_url: str) -> None:
    async with opened(database_url) as postgres:
        adapters: list[DeliveryLog] = [postgres, NullDeliveryLog()]
        assert [adapter.enabled for adapter in adapters] == [True, False]
