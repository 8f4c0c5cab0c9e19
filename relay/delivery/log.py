"""The delivery log in Postgres (asyncpg): one row per attempt, written in batches with COPY.

`record()` only appends to a buffer, so a delivery never waits on Postgres; a writer task flushes
the buffer every `flush_interval` or as soon as `batch_size` rows wait. A failed write keeps the
rows for the next flush (up to `MAX_BUFFERED`, past which the oldest are dropped, loudly), so a
Postgres outage delays the log and never a delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime
from typing import Any

import asyncpg

from relay.delivery.migrate import migrate
from relay.delivery.records import (
    Attempt,
    DeliveryQuery,
    LoggedAttempt,
    Outcome,
    Trigger,
)
from wabus.logs import get_logger

log = get_logger(__name__)

TABLE = "webhook_deliveries"
COLUMNS = (
    "event_id",
    "event_seq",
    "instance",
    "event_type",
    "endpoint",
    "attempt",
    "outcome",
    "status_code",
    "latency_ms",
    "error",
    "next_attempt_at",
    "at",
    "trigger",
)
MAX_BUFFERED = 200_000
MAX_PAGE = 1000


def _row(attempt: Attempt) -> tuple[Any, ...]:
    return (
        attempt.event_id,
        attempt.event_seq,
        attempt.instance,
        attempt.event_type,
        attempt.endpoint,
        attempt.attempt,
        attempt.outcome.value,
        attempt.status_code,
        attempt.latency_ms,
        attempt.error,
        attempt.next_attempt_at,
        attempt.at,
        attempt.trigger.value,
    )


def _attempt(record: asyncpg.Record) -> Attempt:
    return Attempt(
        event_id=record["event_id"],
        event_seq=record["event_seq"],
        instance=record["instance"],
        event_type=record["event_type"],
        endpoint=record["endpoint"],
        attempt=record["attempt"],
        outcome=Outcome(record["outcome"]),
        status_code=record["status_code"],
        latency_ms=record["latency_ms"],
        error=record["error"],
        next_attempt_at=record["next_attempt_at"],
        at=record["at"],
        trigger=Trigger(record["trigger"]),
    )


class PostgresDeliveryLog:
    enabled = True

    def __init__(self, pool: asyncpg.Pool, batch_size: int, flush_interval: float) -> None:
        self._pool = pool
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._buffer: list[tuple[Any, ...]] = []
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._writer = asyncio.create_task(self._write_forever())

    @classmethod
    async def open(
        cls, dsn: str, *, batch_size: int = 2000, flush_interval: float = 0.05
    ) -> PostgresDeliveryLog:
        """Connect, apply the migrations, start the writer."""
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
        async with pool.acquire() as connection:
            await migrate(connection)
        return cls(pool, batch_size, flush_interval)

    async def record(self, attempt: Attempt) -> None:
        self._buffer.append(_row(attempt))
        if len(self._buffer) >= self._batch_size:
            self._wake.set()

    async def _write_forever(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._flush_interval)
            self._wake.clear()
            await self._write()

    async def _write(self) -> bool:
        """Write what is buffered; False (rows kept) when Postgres refused."""
        async with self._lock:
            if not self._buffer:
                return True
            rows, self._buffer = self._buffer, []
            try:
                async with self._pool.acquire() as connection:
                    await connection.copy_records_to_table(TABLE, records=rows, columns=COLUMNS)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
                self._buffer = rows + self._buffer
                if len(self._buffer) > MAX_BUFFERED:
                    dropped = len(self._buffer) - MAX_BUFFERED
                    del self._buffer[:dropped]
                    log.error("delivery log over its buffer: oldest rows dropped", dropped=dropped)
                log.warning(
                    "delivery log write failed, will retry",
                    rows=len(rows),
                    error=f"{type(error).__name__}: {error}",
                )
                return False
            return True

    async def flush(self) -> None:
        await self._write()

    async def close(self) -> None:
        self._writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._writer
        await self._write()
        await self._pool.close()

    async def query(self, query: DeliveryQuery) -> list[LoggedAttempt]:
        await self.flush()  # what was attempted just now is part of the answer
        conditions: list[str] = []
        values: list[Any] = []

        def where(sql: str, value: Any) -> None:
            values.append(value)
            conditions.append(sql.format(f"${len(values)}"))

        for column in ("endpoint", "instance", "event_id"):
            if (value := getattr(query, column)) is not None:
                where(f"{column} = {{}}", value)
        if query.outcome is not None:
            where("outcome = {}", query.outcome.value)
        if query.since is not None:
            where("at >= {}", query.since)
        if query.until is not None:
            where("at < {}", query.until)
        if query.before is not None:
            where("id < {}", query.before)
        values.append(min(max(query.limit, 1), MAX_PAGE))
        sql = (
            f"SELECT id, {', '.join(COLUMNS)} FROM {TABLE}"  # noqa: S608 - fixed names only
            + (" WHERE " + " AND ".join(conditions) if conditions else "")
            + f" ORDER BY id DESC LIMIT ${len(values)}"
        )
        async with self._pool.acquire() as connection:
            records = await connection.fetch(sql, *values)
        return [LoggedAttempt(record["id"], _attempt(record)) for record in records]

    async def latest(self, event_id: str, endpoint: str) -> Attempt | None:
        await self.flush()
        async with self._pool.acquire() as connection:
            record = await connection.fetchrow(
                f"SELECT {', '.join(COLUMNS)} FROM {TABLE}"  # noqa: S608 - fixed names only
                " WHERE event_id = $1 AND endpoint = $2 ORDER BY id DESC LIMIT 1",
                event_id,
                endpoint,
            )
        return None if record is None else _attempt(record)

    async def delivered(self, endpoint: str, event_ids: list[str]) -> set[str]:
        await self.flush()
        async with self._pool.acquire() as connection:
            records = await connection.fetch(
                f"SELECT DISTINCT event_id FROM {TABLE}"  # noqa: S608 - fixed names only
                " WHERE endpoint = $1 AND event_id = ANY($2::text[]) AND outcome = $3",
                endpoint,
                event_ids,
                Outcome.DELIVERED.value,
            )
        return {record["event_id"] for record in records}

    async def count(self, since: datetime | None = None) -> int:
        """Rows written (for benchmarks and tests)."""
        await self.flush()
        async with self._pool.acquire() as connection:
            value = await connection.fetchval(
                f"SELECT count(*) FROM {TABLE} WHERE $1::timestamptz IS NULL OR at >= $1",  # noqa: S608
                since,
            )
        return int(value)
