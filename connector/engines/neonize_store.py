"""Where each instance's whatsmeow device lives: one SQLite file per instance, or rows of its own
in a Postgres database that all instances share.

neonize takes the store as its client's `name`: a string starting with `postgres` is a lib/pq URL,
anything else an SQLite path. Without a device JID it resumes the *first* device of that store,
which is right for a file that holds one instance and wrong for a shared database. In Postgres
wabus therefore keeps `instance → device JID` in a table of its own beside whatsmeow's: a known
instance resumes exactly its device, a new one pairs a new device (`new_device`).

A schema per instance (`search_path`) looked simpler but does not work: the second instance's
migration fails with `relation "whatsmeow_version" does not exist` — whatsmeow's check for its
version table apparently sees the first schema's and takes the empty one as set up.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import asyncpg
from yarl import URL

from wabus.migrations import migrate, migrations

MIGRATIONS_COMPONENT = "connector"
"""The device table is the connector's migration 001 (`connector/migrations/`)."""


@dataclass(frozen=True)
class StoreLocation:
    """What a neonize client of an instance is built with."""

    name: str
    """The neonize client name: an SQLite path or a lib/pq URL."""
    jid: str | None = None
    """The instance's device (`user[.agent]:device@server`) to resume, when it has one."""
    new_device: bool = False
    """Pair a new device even though the store may hold others'."""


class NeonizeStore(Protocol):
    """Where instances' devices live, and which device is whose."""

    async def location(self, instance: str) -> StoreLocation: ...

    async def remember(self, instance: str, jid: str) -> None:
        """The instance is linked as device `jid` (called on every login)."""

    async def forget(self, instance: str) -> None:
        """The instance's device was unlinked; whatsmeow has deleted it."""


class SqliteStore:
    """One SQLite file per instance in `folder` (the data folder's `neonize/`): the file's first
    device is the instance's. The location names it, so that a paired device connects in
    process and an unpaired one pairs in a child process."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def location(self, instance: str) -> StoreLocation:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{instance}.sqlite3"
        return StoreLocation(name=str(path), jid=await asyncio.to_thread(first_device, path))

    async def remember(self, instance: str, jid: str) -> None:
        return None

    async def forget(self, instance: str) -> None:
        return None


def first_device(path: Path) -> str | None:
    """The JID of the first device whatsmeow stored in the SQLite file at `path` (read only;
    None when there is no file, no device table yet, or no device)."""
    if not path.exists():
        return None
    with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
        try:
            row = db.execute("SELECT jid FROM whatsmeow_device LIMIT 1").fetchone()
        except sqlite3.OperationalError:  # no such table: whatsmeow never finished setting up
            return None
    return str(row[0]) if row else None


def store_url(database_url: str, server_has_ssl: bool) -> str:
    """The lib/pq URL for `database_url`.

    lib/pq requires TLS unless told otherwise, where libpq and asyncpg merely prefer it; when
    the URL does not choose an `sslmode`, this one follows libpq's `prefer`: TLS when the server
    offers it, else none.
    """
    url = URL(database_url)
    if "sslmode" in url.query:
        return database_url
    return str(url.update_query(sslmode="require" if server_has_ssl else "disable"))


class PostgresStore:
    """whatsmeow's tables and wabus's device table in the database of `database_url`."""

    def __init__(self, database_url: str) -> None:
        self._database_url = database_url
        self._name: str | None = None

    async def location(self, instance: str) -> StoreLocation:
        connection = await asyncpg.connect(self._database_url)
        try:
            if self._name is None:
                await migrate(connection, MIGRATIONS_COMPONENT, migrations("connector"))
                has_ssl = await connection.fetchval("SHOW ssl") == "on"
                self._name = store_url(self._database_url, has_ssl)
            jid = await self._device(connection, instance)
        finally:
            await connection.close()
        return StoreLocation(name=self._name, jid=jid, new_device=jid is None)

    @staticmethod
    async def _device(connection: asyncpg.Connection, instance: str) -> str | None:
        """The instance's device, if whatsmeow still has it (neonize must never be handed a
        JID its store does not hold: the Go side would dereference a missing device)."""
        jid: str | None = await connection.fetchval(
            "SELECT jid FROM wabus_neonize_device WHERE instance = $1", instance
        )
        if jid is None:
            return None
        try:
            present = await connection.fetchval(
                "SELECT EXISTS (SELECT 1 FROM whatsmeow_device WHERE jid = $1)", jid
            )
        except asyncpg.UndefinedTableError:
            present = False
        if not present:
            await connection.execute(
                "DELETE FROM wabus_neonize_device WHERE instance = $1", instance
            )
            return None
        return jid

    async def remember(self, instance: str, jid: str) -> None:
        connection = await asyncpg.connect(self._database_url)
        try:
            await migrate(connection, MIGRATIONS_COMPONENT, migrations("connector"))
            await connection.execute(
                "INSERT INTO wabus_neonize_device (instance, jid) VALUES ($1, $2) "
                "ON CONFLICT (instance) DO UPDATE SET jid = EXCLUDED.jid, paired_at = now() "
                "WHERE wabus_neonize_device.jid <> EXCLUDED.jid",
                instance,
                jid,
            )
        finally:
            await connection.close()

    async def forget(self, instance: str) -> None:
        connection = await asyncpg.connect(self._database_url)
        try:
            await migrate(connection, MIGRATIONS_COMPONENT, migrations("connector"))
            await connection.execute(
                "DELETE FROM wabus_neonize_device WHERE instance = $1", instance
            )
        finally:
            await connection.close()
