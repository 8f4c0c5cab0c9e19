"""The Postgres fixture gives each test a database of its own that is gone afterwards."""

from __future__ import annotations

import asyncpg


async def test_each_test_gets_an_empty_database_of_its_own(database_url: str) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        tables = await connection.fetchval(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        )
        name = await connection.fetchval("SELECT current_database()")
    finally:
        await connection.close()
    assert tables == 0
    assert str(name).startswith("wabus_test_")
