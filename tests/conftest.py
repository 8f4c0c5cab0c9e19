"""Fixtures for real parts: a nats-server (spawned, or NATS_URL), Postgres (DATABASE_URL, else
testcontainers when a Docker engine is there, else a skip that says why), and names unique to
each test so that shared services never mix runs.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from relay.webhooks.signature import new_secret
from schemas.subjects import Topology
from wabus.embedded import EmbeddedNats, share_ports
from wabus.settings import Settings

_HANDED_TO_WORKERS = "WABUS_TEST_POSTGRES_URL"
POSTGRES_SERVER_URL = os.environ.pop("DATABASE_URL", None) or os.environ.get(_HANDED_TO_WORKERS)
"""Taken out of the environment so that no service a test starts (in process or as a child) writes
to the shared database: a test that wants Postgres asks for `database_url`, a database of its own
on that server. Kept under another name for the test workers (pytest-xdist), which start from the
environment of the process that imported this first."""
if POSTGRES_SERVER_URL:
    os.environ[_HANDED_TO_WORKERS] = POSTGRES_SERVER_URL

_worker = os.environ.get("PYTEST_XDIST_WORKER", "")
if _worker.startswith("gw"):  # one of several test processes picking ports side by side
    share_ports(int(_worker[2:]), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))

API_KEY_ID = "test"
API_SECRET = "s3cret-" + "x" * 24


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if os.environ.get("NATS_URL"):
        yield os.environ["NATS_URL"]
        return
    with EmbeddedNats(tmp_path_factory.mktemp("nats")) as server:
        yield server.url


@pytest.fixture
def prefix() -> str:
    """A subject prefix of this test's own: its streams and buckets are disjoint from any other."""
    return "t" + secrets.token_hex(5)


@pytest.fixture
def webhook_secret() -> str:
    return new_secret()


@pytest.fixture
def settings(nats_url: str, prefix: str, tmp_path: Path, webhook_secret: str) -> Settings:
    return Settings(
        nats_url=nats_url,
        subject_prefix=prefix,
        api_keys=[f"{API_KEY_ID}:{API_SECRET}"],
        webhook_secret=webhook_secret,
        webhook_retry_schedule=(0.0, 0.2, 0.2, 0.2),
        data_dir=tmp_path / "data",
        engine="sim",
        host="127.0.0.1",
        log_format="console",
    )


async def delete_streams(js: JetStreamContext, topology: Topology) -> None:
    """Every stream, bucket and object store of `topology` (those never created are skipped)."""
    buckets = (
        topology.replay_bucket,
        topology.config_bucket,
        topology.status_bucket,
        topology.leases_bucket,
        topology.sends_bucket,
        topology.endpoints_bucket,
        topology.webhook_leases_bucket,
        topology.webhook_attempts_bucket,
        topology.messages_bucket,
    )
    for stream in (
        topology.events_stream,
        topology.commands_stream,
        topology.dlq_stream,
        *(f"KV_{bucket}" for bucket in buckets),
        f"OBJ_{topology.media_store}",
    ):
        with contextlib.suppress(NotFoundError):  # never created: nothing to delete
            await js.delete_stream(stream)


@pytest.fixture
async def nc(nats_url: str, prefix: str) -> AsyncIterator[NATS]:
    """A NATS client for the test; the test's streams and buckets are deleted afterwards."""
    client = await nats.connect(nats_url)
    yield client
    await delete_streams(client.jetstream(), Topology(prefix))
    await client.close()


def _docker_available() -> bool:
    """True when a Docker engine answers (DOCKER_HOST, or the default socket)."""
    if os.environ.get("DOCKER_HOST"):
        return True
    with socket.socket(socket.AF_UNIX) as sock:
        try:
            sock.connect("/var/run/docker.sock")
        except OSError:
            return False
    return True


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A Postgres server: DATABASE_URL, else testcontainers (needs Docker), else skip with why."""
    if POSTGRES_SERVER_URL:
        yield POSTGRES_SERVER_URL
        return
    if not _docker_available():
        pytest.skip("Postgres tests need DATABASE_URL or a Docker engine for testcontainers")
    from testcontainers.postgres import PostgresContainer

    with PostgresContainer("postgres:16-alpine", driver=None) as container:
        url: str = container.get_connection_url()
        yield url


@pytest.fixture
async def database_url(postgres_server_url: str) -> AsyncIterator[str]:
    """A throwaway database of this test's own on that server, dropped afterwards."""
    import asyncpg

    name = "wabus_test_" + secrets.token_hex(6)
    admin = await asyncpg.connect(postgres_server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base, _, _ = postgres_server_url.rpartition("/")
    yield f"{base}/{name}"
    admin = await asyncpg.connect(postgres_server_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
