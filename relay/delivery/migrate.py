"""The delivery log's schema migrations (`relay/delivery/migrations/NNN-name.sql`), run by the
shared runner (`wabus.migrations`) as the `relay` component.

An earlier wabus kept its record of them in the generic `schema_migrations`: its rows of our
migrations are adopted once, and that table itself is left alone (it could be someone else's).
"""

from __future__ import annotations

import asyncpg

from wabus.logs import get_logger
from wabus.migrations import TABLE, Migration, bootstrap
from wabus.migrations import migrate as run_migrations
from wabus.migrations import migrations as read_migrations

log = get_logger(__name__)

COMPONENT = "relay"
_FORMER_TABLE = "schema_migrations"


def migrations() -> list[Migration]:
    return read_migrations("relay.delivery")


async def migrate(
    connection: asyncpg.Connection, pending: list[Migration] | None = None
) -> list[int]:
    """Apply the delivery log's migrations its database lacks; the versions applied now."""
    todo = migrations() if pending is None else pending
    async with connection.transaction():
        await bootstrap(connection)
        await _adopt_former_table(connection, todo)
    return await run_migrations(connection, COMPONENT, todo)


async def _adopt_former_table(connection: asyncpg.Connection, known: list[Migration]) -> None:
    """Copy the rows of our migrations from the table an earlier wabus used, once."""
    ours_recorded = await connection.fetchval(
        f"SELECT count(*) FROM {TABLE} WHERE component = $1",  # noqa: S608 - a constant
        COMPONENT,
    )
    if ours_recorded or await connection.fetchval("SELECT to_regclass($1)", _FORMER_TABLE) is None:
        return
    rows = await connection.fetch(
        f"SELECT version, name, applied_at FROM {_FORMER_TABLE}"  # noqa: S608 - a constant
    )
    ours = {(migration.version, migration.name) for migration in known}
    adopted = [
        (COMPONENT, row["version"], row["name"], row["applied_at"])
        for row in rows
        if (row["version"], row["name"]) in ours
    ]
    if adopted:
        await connection.executemany(
            f"INSERT INTO {TABLE} (component, version, name, applied_at)"  # noqa: S608
            " VALUES ($1, $2, $3, $4)",
            adopted,
        )
        log.info(
            "delivery log migrations adopted from the former table",
            table=_FORMER_TABLE,
            versions=[row[1] for row in adopted],
        )
