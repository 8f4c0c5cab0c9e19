"""The delivery log on Postgres: attempts are buffered in memory and written by COPY in batches.

`record()` is on the webhook hot path, so it only appends to a buffer; a background writer empties
the buffer every `flush_interval` seconds, or as soon as `batch_size` rows wait. When Postgres
refuses a write the rows stay in the buffer and the writer tries again with a growing delay; the
buffer is bounded (`max_pending`, the batch being written included): past it `record()` waits for
a write (backpressure), and when even that fails the oldest rows are dropped with an error log
rather than memory growing without end. A row Postgres can never take (a bad value) is dropped
alone, not retried forever with its whole batch.

A row counts as pending (`pending`) from `record()` until its batch is committed or it is dropped
with an error log: a batch on its way to Postgres is still pending, and goes back to the buffer if
the write fails. `flush()` and `close()` wait for a write under way before their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Sequence
from datetime import datetime, timedelta

import asyncpg

from relay.delivery.migrate import migrate
from relay.delivery.records import Attempt, DeliveryQuery, LoggedAttempt, Outcome, Trigger
from relay.delivery.retention import keep_pruning
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
_SELECT = ", ".join(COLUMNS)

MAX_PENDING = 100_000
"""Rows held (the batch being written included) before `record()` waits for a write (and drops the
oldest if it fails)."""
MAX_QUERY_LIMIT = 1000
CONNECT_TIMEOUT_SECONDS = 10.0
WRITE_TIMEOUT_SECONDS = 60.0
READ_TIMEOUT_SECONDS = 30.0
RETRY_MAX_SECONDS = 5.0
"""The longest wait between two write attempts while Postgres refuses them."""
DROP_LOG_SECONDS = 1.0
"""Dropped rows are reported at most this often, so an outage does not flood the log."""

Row = tuple[
    str, int, str, str, str, int, str, int | None, float, str | None, datetime | None, datetime, str
]

_BAD_ROWS = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
    ValueError,
    TypeError,
    OverflowError,
)
"""Errors a batch raises because of what is in it (a retry fails the same way), as opposed to
Postgres being away (a retry may succeed). Client-side encoding errors are plain Python ones."""


def _row(attempt: Attempt) -> Row:
    error = attempt.error
    if error is not None and "\x00" in error:
        error = error.replace("\x00", "\ufffd")  # Postgres text cannot hold NUL
    return (
        attempt.event_id,
        attempt.event_seq,
        attempt.instance,
        attempt.event_type,
        attempt.endpoint,
        attempt.attempt,
        str(attempt.outcome),
        attempt.status_code,
        attempt.latency_ms,
        error,
        attempt.next_attempt_at,
        attempt.at,
        str(attempt.trigger),
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
        latency_ms=float(record["latency_ms"]),
        error=record["error"],
        next_attempt_at=record["next_attempt_at"],
        at=record["at"],
        trigger=Trigger(record["trigger"]),
    )


def _describe(error: BaseException) -> str:
    """The error for a log line: asyncpg's messages name the server at most, never the DSN."""
    return f"{type(error).__name__}: {error}"


class PostgresDeliveryLog:
    """`DeliveryLog` on Postgres: `webhook_deliveries`, migrated by `relay.delivery.migrate`."""

    enabled = True

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        batch_size: int = 1000,
        flush_interval: float = 0.05,
        max_pending: int = MAX_PENDING,
    ) -> None:
        if batch_size < 1 or flush_interval <= 0 or max_pending < batch_size:
            raise ValueError("need batch_size >= 1, flush_interval > 0, max_pending >= batch_size")
        self._pool = pool
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._max_pending = max_pending
        self._pending: deque[Row] = deque()
        self._in_flight = 0
        """Rows of the batch being written: still pending until Postgres has committed them."""
        self._write_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._failures = 0
        self._retry_at = 0.0
        self._dropped = 0
        self._drop_logged_at = -DROP_LOG_SECONDS
        self._closing = False
        self._writer: asyncio.Task[None] | None = None
        self._pruner: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls,
        dsn: str,
        *,
        batch_size: int = 1000,
        flush_interval: float = 0.05,
        max_pending: int = MAX_PENDING,
        retention: timedelta | None = None,
    ) -> PostgresDeliveryLog:
        """Connect, migrate the schema and start the writer, and the pruner when `retention`
        is given (rows older than that are deleted)."""
        pool = await asyncpg.create_pool(
            dsn, min_size=1, max_size=4, timeout=CONNECT_TIMEOUT_SECONDS
        )
        try:
            async with pool.acquire() as connection:
                await migrate(connection)
            delivery_log = cls(
                pool, batch_size=batch_size, flush_interval=flush_interval, max_pending=max_pending
            )
        except BaseException:
            await pool.close()
            raise
        delivery_log._writer = asyncio.create_task(delivery_log._run(), name="delivery-log")
        if retention is not None:
            delivery_log._pruner = asyncio.create_task(
                keep_pruning(pool, retention), name="delivery-log-retention"
            )
        return delivery_log

    @property
    def pending(self) -> int:
        """Rows recorded and neither written nor dropped yet, a batch being written included."""
        return len(self._pending) + self._in_flight

    async def record(self, attempt: Attempt) -> None:
        if self._closing:
            log.warning("delivery log closed: attempt not logged", event_id=attempt.event_id)
            return
        self._pending.append(_row(attempt))
        if len(self._pending) == self._batch_size:
            self._wake.set()
        elif self.pending > self._max_pending:
            await self._write(above=self._max_pending)  # after the write under way, if one is
            self._drop_excess()

    async def flush(self) -> None:
        """Write everything pending now, even while backing off, after the write under way if
        there is one; if Postgres refuses, the failure is logged and the rows stay pending (see
        `pending`) for the writer to retry."""
        await self._write(force=True)

    async def close(self) -> None:
        """Flush, stop the writer and close the pool; rows still unwritten are logged as lost."""
        if self._closing:
            return
        self._closing = True
        self._wake.set()
        if self._pruner is not None:
            self._pruner.cancel()
            await asyncio.wait({self._pruner})
        if self._writer is not None:
            await asyncio.wait({self._writer})  # its end, however it came
            failure = None if self._writer.cancelled() else self._writer.exception()
            if failure is not None:
                log.error("delivery log writer failed", error=_describe(failure))
        await self._write(force=True)
        self._report_drops(force=True)
        if self._pending:
            log.error(
                "delivery log closed with rows unwritten: they are lost", count=len(self._pending)
            )
            self._pending.clear()
        await self._pool.close()

    async def query(self, query: DeliveryQuery) -> list[LoggedAttempt]:
        """Newest first; every filter optional; `before` is the id cursor, `until` exclusive.

        Reads flush first, so they include what this relay recorded just before (a retry numbers
        its attempt after the last one)."""
        clauses: list[str] = []
        args: list[object] = []

        def where(condition: str, value: object) -> None:
            args.append(value)
            clauses.append(condition.format(f"${len(args)}"))

        for column, value in (
            ("endpoint", query.endpoint),
            ("instance", query.instance),
            ("event_id", query.event_id),
            ("outcome", None if query.outcome is None else str(query.outcome)),
        ):
            if value is not None:
                where(f"{column} = {{}}", value)
        if query.since is not None:
            where("at >= {}", query.since)
        if query.until is not None:
            where("at < {}", query.until)
        if query.before is not None:
            where("id < {}", query.before)
        args.append(max(0, min(query.limit, MAX_QUERY_LIMIT)))
        condition = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = (
            f"SELECT id, {_SELECT} FROM {TABLE} {condition}"  # noqa: S608 - fixed names; bound values
            f" ORDER BY id DESC LIMIT ${len(args)}"
        )
        await self.flush()
        rows = await self._pool.fetch(sql, *args, timeout=READ_TIMEOUT_SECONDS)
        return [LoggedAttempt(row["id"], _attempt(row)) for row in rows]

    async def latest(self, event_id: str, endpoint: str) -> Attempt | None:
        await self.flush()
        row = await self._pool.fetchrow(
            f"SELECT {_SELECT} FROM {TABLE} WHERE event_id = $1 AND endpoint = $2"  # noqa: S608
            " ORDER BY id DESC LIMIT 1",
            event_id,
            endpoint,
            timeout=READ_TIMEOUT_SECONDS,
        )
        return None if row is None else _attempt(row)

    async def delivered(self, endpoint: str, event_ids: list[str]) -> set[str]:
        if not event_ids:
            return set()
        await self.flush()
        rows = await self._pool.fetch(
            f"SELECT DISTINCT event_id FROM {TABLE}"  # noqa: S608
            " WHERE endpoint = $1 AND event_id = ANY($2::text[]) AND outcome = $3",
            endpoint,
            event_ids,
            str(Outcome.DELIVERED),
            timeout=READ_TIMEOUT_SECONDS,
        )
        return {row["event_id"] for row in rows}

    async def count(self, since: datetime | None = None) -> int:
        """Rows written, all or from `since` on (for tests and benchmarks)."""
        await self.flush()
        value = await self._pool.fetchval(
            f"SELECT count(*) FROM {TABLE} WHERE $1::timestamptz IS NULL OR at >= $1",  # noqa: S608
            since,
            timeout=READ_TIMEOUT_SECONDS,
        )
        return int(value)

    async def _run(self) -> None:
        """The writer: a write every `flush_interval`, or sooner when a batch is full; after a
        refused write, the next one waits out the retry delay."""
        while not self._closing:
            backoff = self._retry_at - time.monotonic()
            if backoff > 0 or len(self._pending) < self._batch_size:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(backoff, self._flush_interval)):
                        await self._wake.wait()
                self._wake.clear()
            if not self._closing and time.monotonic() >= self._retry_at:
                await self._write()

    async def _write(self, *, above: int = 0, force: bool = False) -> bool:
        """Write the pending rows if more than `above` wait; False when Postgres refused them
        (or a retry is not due yet and `force` is off). The rows then stay pending.

        One write at a time (the lock): while the batch is on its way it counts in `pending`, and
        a failed write puts it back in front of the rows recorded meanwhile."""
        async with self._write_lock:
            if len(self._pending) <= above:
                return True
            if not force and time.monotonic() < self._retry_at:
                return False
            batch, self._pending = self._pending, deque()
            self._in_flight = len(batch)
            try:
                connection = await self._pool.acquire(timeout=CONNECT_TIMEOUT_SECONDS)
                try:
                    await self._copy(connection, batch)
                except BaseException:
                    await self._pool.release(connection)
                    raise
            except Exception as error:
                self._put_back(batch)
                self._failed(error)
                return False
            except BaseException:
                self._put_back(batch)
                raise
            self._in_flight = 0  # committed: whatever becomes of the connection now
            await self._release_after_write(connection)
            if self._failures:
                log.info("delivery log writes again", failures=self._failures)
            self._failures = 0
            self._retry_at = 0.0
            self._report_drops()
            return True

    def _put_back(self, batch: deque[Row]) -> None:
        """A batch not written goes back in front of the rows recorded while it was away."""
        batch.extend(self._pending)
        self._pending = batch
        self._in_flight = 0

    async def _release_after_write(self, connection: asyncpg.Connection) -> None:
        """Give the connection back once its batch is committed. The pool resets it first, and a
        connection that dies right then (Postgres restarted, backend terminated) makes that raise:
        the rows are in all the same, so this must not count as a failed write, or the batch
        would be written a second time. asyncpg has closed such a connection already."""
        try:
            await self._pool.release(connection)
        except Exception as error:
            log.warning(
                "delivery log connection lost after a committed write: the write stands",
                error=_describe(error),
            )

    async def _copy(self, connection: asyncpg.Connection, rows: Sequence[Row]) -> None:
        try:
            await self._copy_on(connection, rows)
        except _BAD_ROWS:
            async with connection.transaction():
                await self._copy_sorting(connection, list(rows))

    async def _copy_on(self, connection: asyncpg.Connection, rows: Sequence[Row]) -> None:
        await connection.copy_records_to_table(
            TABLE, records=rows, columns=COLUMNS, timeout=WRITE_TIMEOUT_SECONDS
        )

    async def _copy_sorting(self, connection: asyncpg.Connection, rows: list[Row]) -> None:
        """Write `rows` but the bad ones, by halving around them; each half in a savepoint of
        the caller's transaction, so a batch is still all written or not at all."""
        try:
            async with connection.transaction():
                await self._copy_on(connection, rows)
        except _BAD_ROWS as error:
            if len(rows) == 1:
                log.error(
                    "delivery log row refused by Postgres: dropped",
                    error=_describe(error),
                    event_id=rows[0][0],
                    endpoint=rows[0][4],
                )
                return
            middle = len(rows) // 2
            await self._copy_sorting(connection, rows[:middle])
            await self._copy_sorting(connection, rows[middle:])

    def _failed(self, error: Exception) -> None:
        self._failures += 1
        delay = min(RETRY_MAX_SECONDS, self._flush_interval * 2**self._failures)
        self._retry_at = time.monotonic() + delay
        log.warning(
            "delivery log write failed: rows kept for a retry",
            error=_describe(error),
            pending=len(self._pending),
            retry_in=round(delay, 3),
        )
        self._drop_excess()

    def _drop_excess(self) -> None:
        """Past `max_pending`, the oldest rows go: memory stays bounded through an outage."""
        excess = len(self._pending) - self._max_pending
        for _ in range(excess):
            self._pending.popleft()
        if excess > 0:
            self._dropped += excess
            self._report_drops()

    def _report_drops(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if self._dropped and (force or now >= self._drop_logged_at + DROP_LOG_SECONDS):
            log.error(
                "delivery log buffer full: oldest rows dropped",
                count=self._dropped,
                max_pending=self._max_pending,
            )
            self._dropped = 0
            self._drop_logged_at = now
