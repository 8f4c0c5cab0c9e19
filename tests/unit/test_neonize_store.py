"""The pure parts of the store: the lib/pq URL (the stores themselves are exercised against real
SQLite and Postgres in tests/integration/test_neonize_engine.py)."""

from __future__ import annotations

from yarl import URL

from connector.engines.neonize_store import store_url


def test_store_url_follows_prefer_for_tls() -> None:
    plain = URL(store_url("postgresql://u:p@db:5432/app", server_has_ssl=False))
    assert plain.query["sslmode"] == "disable"
    assert (plain.host, plain.path, plain.user, plain.password) == ("db", "/app", "u", "p")
    tls = URL(store_url("postgres://db/app", server_has_ssl=True))
    assert tls.query["sslmode"] == "require"


def test_an_explicit_sslmode_is_kept() -> None:
    chosen = "postgres://db/app?sslmode=verify-full&application_name=x"
    assert store_url(chosen, server_has_ssl=False) == chosen
