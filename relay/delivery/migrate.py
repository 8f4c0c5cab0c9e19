"""Schema migrations of the delivery log: numbered SQL files applied once each, in order.

The files ship inside the package (`relay/delivery/migrations/NNN-name.sql`) and are read with
`importlib.resources`, so an installed relay migrates its database without a checkout. Every relay
replica runs this at start; a Postgres advisory lock makes replicas starting together take turns,
so each file runs exactly once however many start at the same moment.

What ran is kept in `wabus_migrations`, a name of our own: the database may be shared with
whatsmeow's session store or with other software, where a generic `schema_migrations` could be
someone else's. A database migrated by an earlier wabus, which used `schema_migrations`, has its
rows of our migrations copied over once; that table itself is left alone.
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

TABLE = "wabus_migrations"
_FORMER_TABLE = "schema_migrations"
_BOOTSTRAP = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
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
        await _adopt_former_table(connection, todo)
    applied: list[int] = []
    for migration in todo:
        async with connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
            done = await connection.fetchval(
                f"SELECT true FROM {TABLE} WHERE version = $1",  # noqa: S608 - a constant
                migration.version,
            )
            if done:
                continue
            await connection.execute(migration.sql)
            await connection.execute(
                f"INSERT INTO {TABLE} (version, name) VALUES ($1, $2)",  # noqa: S608 - a constant
                migration.version,
                migration.name,
            )
        applied.append(migration.version)
        log.info("delivery log migration applied", version=migration.version, name=migration.name)
    return applied


async def _adopt_former_table(connection: asyncpg.Connection, known: list[Migration]) -> None:
    """Copy the rows of our migrations from the table an earlier wabus used, once."""
    if await connection.fetchval(f"SELECT count(*) FROM {TABLE}"):  # noqa: S608 - a constant
        return
    if await connection.fetchval("SELECT to_regclass($1)", _FORMER_TABLE) is None:
        return
    rows = await connection.fetch(
        f"SELECT version, name, applied_at FROM {_FORMER_TABLE}"  # noqa: S608 - a constant
    )
    ours = {(migration.version, migration.name) for migration in known}
    adopted = [tuple(row) for row in rows if (row["version"], row["name"]) in ours]
    if adopted:
        await connection.executemany(
            f"INSERT INTO {TABLE} (version, name, applied_at) VALUES ($1, $2, $3)",  # noqa: S608
            adopted,
        )
        log.info(
            "delivery log migrations adopted from the former table",
            table=_FORMER_TABLE,
            versions=[row[0] for row in adopted],
        )
