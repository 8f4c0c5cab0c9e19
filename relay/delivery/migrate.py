"""Schema migrations of the delivery log: numbered SQL files applied once each, in order.

The files ship inside the package (`relay/delivery/migrations/NNN-name.sql`) and are read with
`importlib.resources`, so an installed relay migrates its database without a checkout. Every relay
replica runs this at start; a Postgres advisory lock makes replicas starting together take turns,
so each file runs exactly once however many start at the same moment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

from wabus.logs import get_logger

log = get_logger(__name__)

LOCK_KEY = 0x7761_6275_7301
"""The advisory lock key of these migrations ("wabus" 01); advisory locks are per database."""

_FILE_NAME = re.compile(r"^(\d{3,})-([a-z0-9_-]+)\.sql$")

_BOOTSTRAP = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version int PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations(package: str = "relay.delivery", folder: str = "migrations") -> list[Migration]:
    """The migration files of `package`/`folder`, by version; a repeated version is an error."""
    found: dict[int, Migration] = {}
    for entry in resources.files(package).joinpath(folder).iterdir():
        match = _FILE_NAME.match(entry.name)
        if match is None:
            continue
        version = int(match.group(1))
        if version in found:
            raise ValueError(f"two migrations numbered {version}: {entry.name}")
        found[version] = Migration(version, match.group(2), entry.read_text(encoding="utf-8"))
    return [found[version] for version in sorted(found)]


async def migrate(
    connection: asyncpg.Connection, pending: list[Migration] | None = None
) -> list[int]:
    """Apply the migrations `connection`'s database lacks; returns the versions applied now.

    Each file runs in a transaction of its own that first takes the advisory lock and then checks
    `schema_migrations` again, so a replica that waited for another finds the work done.
    """
    todo = migrations() if pending is None else pending
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
        await connection.execute(_BOOTSTRAP)
    applied: list[int] = []
    for migration in todo:
        async with connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
            done = await connection.fetchval(
                "SELECT true FROM schema_migrations WHERE version = $1", migration.version
            )
            if done:
                continue
            await connection.execute(migration.sql)
            await connection.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                migration.version,
                migration.name,
            )
        applied.append(migration.version)
        log.info("delivery log migration applied", version=migration.version, name=migration.name)
    return applied
