"""Schema migrations in Postgres: numbered SQL files applied once each, in order, per component.

Each service that keeps tables in the shared database ships its files inside its package
(`<package>/migrations/NNN-name.sql`, read with `importlib.resources`, so an installed service
migrates without a checkout) and runs them at start under one Postgres advisory lock, so replicas
starting together take turns and each file runs exactly once.

What ran is kept in `wabus_migrations`, by component (`relay`, `connector`) and version: a name of
our own, since the database may be shared with whatsmeow's session store or other software, where
a generic `schema_migrations` could be someone else's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

from wabus.logs import get_logger

log = get_logger(__name__)

LOCK_KEY = 0x7761_6275_7301
"""The advisory lock key of the migrations ("wabus" 01); advisory locks are per database."""
TABLE = "wabus_migrations"

_FILE_NAME = re.compile(r"^(\d{3,})-([a-z0-9_-]+)\.sql$")
_BOOTSTRAP = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    component text NOT NULL,
    version int NOT NULL,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (component, version)
)
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations(package: str, folder: str = "migrations") -> list[Migration]:
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


async def bootstrap(connection: asyncpg.Connection) -> None:
    """The migrations table, created under the lock (inside the caller's transaction)."""
    await connection.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
    await connection.execute(_BOOTSTRAP)


async def migrate(
    connection: asyncpg.Connection, component: str, todo: list[Migration]
) -> list[int]:
    """Apply the migrations of `component` that `connection`'s database lacks; the versions
    applied now. Each file runs in a transaction of its own that first takes the advisory lock
    and then checks again, so a replica that waited for another finds the work done."""
    async with connection.transaction():
        await bootstrap(connection)
    applied: list[int] = []
    for migration in todo:
        async with connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
            done = await connection.fetchval(
                f"SELECT true FROM {TABLE} WHERE component = $1 AND version = $2",  # noqa: S608
                component,
                migration.version,
            )
            if done:
                continue
            await connection.execute(migration.sql)
            await connection.execute(
                f"INSERT INTO {TABLE} (component, version, name) VALUES ($1, $2, $3)",  # noqa: S608
                component,
                migration.version,
                migration.name,
            )
        applied.append(migration.version)
        log.info(
            "migration applied", component=component, version=migration.version, name=migration.name
        )
    return applied
