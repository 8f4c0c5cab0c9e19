"""Delivery-log retention: rows older than `WABUS_DELIVERY_LOG_RETENTION_DAYS` are deleted, so the
table stops growing without bound.

Deletion goes in small batches, each its own short transaction: the log keeps being written while
old rows go, and no lock is held for long. Every relay replica prunes; two pruning at once take
turns on the same rows harmlessly.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import asyncpg

from schemas.envelope import utc_now
from wabus.logs import get_logger

log = get_logger(__name__)

BATCH_ROWS = 5_000
EVERY_SECONDS = 3_600.0
"""How often a relay looks for expired rows."""

_DELETE = """
DELETE FROM webhook_deliveries
WHERE id IN (SELECT id FROM webhook_deliveries WHERE at < $1 ORDER BY at LIMIT $2)
"""


async def prune(pool: asyncpg.Pool, older_than: datetime, batch: int = BATCH_ROWS) -> int:
    """Delete the rows logged before `older_than`, `batch` at a time; how many went."""
    deleted = 0
    while True:
        async with pool.acquire() as connection:
            status = await connection.execute(_DELETE, older_than, batch)
        count = int(status.rsplit(" ", 1)[-1])
        deleted += count
        if count < batch:
            return deleted
        await asyncio.sleep(0)  # let the writer in between batches


async def keep_pruning(pool: asyncpg.Pool, retention: timedelta) -> None:
    """Prune now and every `EVERY_SECONDS` until cancelled; a refusal is logged and retried."""
    while True:
        cutoff = utc_now() - retention
        try:
            deleted = await prune(pool, cutoff)
        except (asyncpg.PostgresError, OSError, TimeoutError) as error:
            log.warning("delivery log not pruned: trying again later", error=repr(error))
        else:
            if deleted:
                log.info("delivery log pruned", rows=deleted, older_than=cutoff.isoformat())
        await asyncio.sleep(EVERY_SECONDS)
