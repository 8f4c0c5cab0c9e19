"""Benchmark: the Postgres delivery log's write rate (not a test; run it by hand).

Creates a throwaway database on the server of `--database-url` (or `DATABASE_URL`), records
`--rows` attempts through `PostgresDeliveryLog.record()` as fast as one coroutine can (giving
the loop a turn every `--yield-every` records, as a busy relay would, so the writer's batches of
`--batch-size` go out meanwhile; 0 never yields and leaves it all to one final COPY), then
`flush()`es, and prints the rows/s of the whole (record + COPY in the background + final flush)
and the mean cost of one `record()` call, the part a delivery pays. The rows are counted
afterwards and the database is dropped.

    DATABASE_URL=postgresql://postgres@localhost:5432/postgres python bench/delivery_log.py
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from relay.delivery.log import PostgresDeliveryLog  # noqa: E402
from relay.delivery.records import Attempt, Outcome  # noqa: E402


def attempts(count: int) -> list[Attempt]:
    start = datetime.now(UTC)
    return [
        Attempt(
            event_id=f"evt_{number:012d}",
            event_seq=number,
            instance=f"instance-{number % 50}",
            event_type="message.received",
            endpoint=f"instance-{number % 50}/crm",
            attempt=1,
            outcome=Outcome.DELIVERED if number % 10 else Outcome.RETRYING,
            status_code=200 if number % 10 else 503,
            latency_ms=12.5,
            error=None if number % 10 else "HTTP 503",
            next_attempt_at=None if number % 10 else start + timedelta(seconds=5),
            at=start + timedelta(microseconds=number),
        )
        for number in range(count)
    ]


async def run(server_url: str, rows: int, batch_size: int, yield_every: int) -> None:
    name = "wabus_bench_" + secrets.token_hex(6)
    admin = await asyncpg.connect(server_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = server_url.rpartition("/")
    try:
        to_record = attempts(rows)
        delivery_log = await PostgresDeliveryLog.open(f"{base}/{name}", batch_size=batch_size)
        try:
            started = time.perf_counter()
            for number, one in enumerate(to_record, 1):
                await delivery_log.record(one)
                if yield_every and number % yield_every == 0:
                    await asyncio.sleep(0)
            recorded = time.perf_counter()
            await delivery_log.flush()
            done = time.perf_counter()
            written = await delivery_log.count()
        finally:
            await delivery_log.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    total = done - started
    print(f"rows: {rows}, batch_size: {batch_size}, yield_every: {yield_every}, written: {written}")
    print(f"record()+flush: {total:.3f} s = {rows / total:,.0f} rows/s")
    print(f"record() alone: {(recorded - started) / rows * 1e6:.2f} µs per call")
    if written != rows:
        raise SystemExit(f"{rows - written} rows missing")


def main() -> None:
    parser = argparse.ArgumentParser(description="The Postgres delivery log's write rate.")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--yield-every", type=int, default=100)
    arguments = parser.parse_args()
    if not arguments.database_url:
        parser.error("--database-url or DATABASE_URL is needed")
    asyncio.run(
        run(arguments.database_url, arguments.rows, arguments.batch_size, arguments.yield_every)
    )


if __name__ == "__main__":
    main()
