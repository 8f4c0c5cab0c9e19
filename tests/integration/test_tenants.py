"""Tenants isolated (issue 10): a key scoped to instances holds at most its quota of instances
and never reads, retries or recovers deliveries of endpoints outside its scope. Real relays on a
real nats-server, the connector on the sim engine, the delivery log on a real Postgres."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from functools import partial
from ipaddress import ip_network
from typing import Any

import httpx
import pytest
from nats.aio.client import Client as NATS
from pydantic import SecretStr

from relay.app import create_app
from relay.delivery.log import PostgresDeliveryLog
from relay.delivery.records import Attempt
from relay.problems import PROBLEM_JSON
from tests.conftest import API_KEY_ID, API_SECRET
from tests.connector_support import connector_running, state_is
from tests.relay_helpers import dead_attempt, signed
from tests.support import eventually, running
from wabus.settings import Settings

TENANT = "tenant"
TENANT_SECRET = "tenant-secret-" + "t" * 20
NOW = datetime.now(UTC)


def tenanted(settings: Settings, **changes: Any) -> Settings:
    """The test settings with the operator's key and a key scoped to `acme` and `beta-*`."""
    keys = [f"{API_KEY_ID}:{API_SECRET}", f"{TENANT}@acme|beta-*:{TENANT_SECRET}"]
    return settings.model_copy(update={"api_keys": keys, **changes})


async def as_tenant(url: str, method: str, target: str, payload: Any = None) -> httpx.Response:
    return await signed(url, method, target, payload, key_id=TENANT, secret=TENANT_SECRET)


def refused(response: httpx.Response, status: int, code: str) -> None:
    """A 4xx problem naming `code`."""
    assert response.headers["content-type"].startswith(PROBLEM_JSON), response.text
    assert (response.status_code, response.json()["code"]) == (status, code), response.text


async def instances_in_bucket(nc: NATS, settings: Settings) -> set[str]:
    kv = await nc.jetstream().key_value(settings.topology.config_bucket)
    return set(await kv.keys())


@pytest.fixture
async def url(settings: Settings, nc: NATS) -> AsyncIterator[str]:
    async with running(create_app(tenanted(settings, key_max_instances=2))) as base:
        yield base


async def test_a_scoped_key_stops_at_its_quota_and_the_operator_does_not(
    url: str, nc: NATS, settings: Settings
) -> None:
    # below the quota: created
    for instance in ("acme", "beta-1"):
        assert (await as_tenant(url, "POST", "/v1/instances", {"id": instance})).status_code == 201

    over = await as_tenant(url, "POST", "/v1/instances", {"id": "beta-2"})
    refused(over, 409, "quota_exceeded")
    assert "WABUS_KEY_MAX_INSTANCES" in over.json()["detail"]
    assert await instances_in_bucket(nc, settings) == {"acme", "beta-1"}  # nothing written

    # the operator's key has no quota, also inside the tenant's scope
    for instance in ("ops", "beta-2"):
        assert (await signed(url, "POST", "/v1/instances", {"id": instance})).status_code == 201

    # instances in the key's scope count, whoever created them; deleting frees room
    assert (await as_tenant(url, "DELETE", "/v1/instances/beta-1")).status_code == 204
    refused(await as_tenant(url, "POST", "/v1/instances", {"id": "beta-3"}), 409, "quota_exceeded")
    assert (await as_tenant(url, "DELETE", "/v1/instances/beta-2")).status_code == 204
    assert (await as_tenant(url, "POST", "/v1/instances", {"id": "beta-3"})).status_code == 201
    assert await instances_in_bucket(nc, settings) == {"acme", "beta-3", "ops"}


async def test_creations_racing_on_two_replicas_never_pass_the_quota(
    settings: Settings, nc: NATS
) -> None:
    quota_of_one = tenanted(settings, key_max_instances=1)
    async with running(create_app(quota_of_one)) as one, running(create_app(quota_of_one)) as two:
        for round_ in range(5):
            answers = await asyncio.gather(
                as_tenant(one, "POST", "/v1/instances", {"id": f"beta-{round_}a"}),
                as_tenant(two, "POST", "/v1/instances", {"id": f"beta-{round_}b"}),
            )
            statuses = sorted(answer.status_code for answer in answers)
            assert statuses == [201, 409], [answer.text for answer in answers]
            refused(next(a for a in answers if a.status_code == 409), 409, "quota_exceeded")
            [kept] = await instances_in_bucket(nc, settings)
            assert (await as_tenant(one, "DELETE", f"/v1/instances/{kept}")).status_code == 204


async def test_the_operator_still_gets_a_session_when_a_tenant_is_at_its_quota(
    settings: Settings, nc: NATS
) -> None:
    """The measured harm: a tenant filled the connector's session cap and the operator's next
    instance ended `failed / over_capacity`."""
    capped = tenanted(settings, key_max_instances=2, max_sessions=3)
    async with connector_running(capped, nc), running(create_app(capped)) as base:
        for instance in ("acme", "beta-1"):
            created = await as_tenant(base, "POST", "/v1/instances", {"id": instance})
            assert created.status_code == 201, created.text
        refused(
            await as_tenant(base, "POST", "/v1/instances", {"id": "beta-2"}), 409, "quota_exceeded"
        )
        assert (await signed(base, "POST", "/v1/instances", {"id": "ops"})).status_code == 201
        for instance in ("acme", "beta-1", "ops"):
            await eventually(partial(state_is, nc, capped.topology, instance, "open"))


# --- delivery rows, endpoints, retry and recover ------------------------------------------------


def row(number: int, instance: str, endpoint: str) -> Attempt:
    return dead_attempt(number, instance, endpoint, NOW)


ROWS = [
    row(1, "acme", "global"),
    row(2, "acme", "acme/wh_a"),
    row(3, "beta-1", "global"),
    row(4, "beta-1", "beta-1/wh_b"),
    row(5, "other", "global"),
    row(6, "other", "other/wh_o"),
    row(7, "acme", "acme/wh_a"),
]


@pytest.fixture
async def logged(settings: Settings, nc: NATS, database_url: str) -> AsyncIterator[str]:
    """A relay with a delivery log holding `ROWS`, a global endpoint and per-instance ones."""
    with_log = tenanted(
        settings,
        database_url=SecretStr(database_url),
        webhook_url="http://127.0.0.1:9/hook",
        webhook_allow_cidrs=(ip_network("127.0.0.0/8"),),
    )
    async with running(create_app(with_log)) as base:
        for instance, hook in (("acme", "wh_a"), ("beta-1", "wh_b"), ("other", "wh_o")):
            webhook = {"id": hook, "url": "http://127.0.0.1:9/hook"}
            created = await signed(
                base, "POST", "/v1/instances", {"id": instance, "webhooks": [webhook]}
            )
            assert created.status_code == 201, created.text
        writer = await PostgresDeliveryLog.open(database_url)
        try:
            for attempt in ROWS:
                await writer.record(attempt)
            await writer.flush()
        finally:
            await writer.close()
        yield base


async def rows_seen(url: str, query: str, *, tenant: bool = True) -> list[str]:
    """Every row (`<event>@<endpoint>`) the query shows, following `next` to the end."""
    seen: list[str] = []
    target = f"/v1/deliveries?{query}"
    while True:
        answer = await (as_tenant(url, "GET", target) if tenant else signed(url, "GET", target))
        assert answer.status_code == 200, answer.text
        page = answer.json()
        seen += [f"{r['event_id']}@{r['endpoint']}" for r in page["deliveries"]]
        if page["next"] is None:
            return seen
        target = f"/v1/deliveries?{query}&before={page['next']}"


async def test_a_scoped_key_reads_only_rows_of_its_own_endpoints(logged: str) -> None:
    # the operator sees the global endpoint's rows of acme: they exist
    assert await rows_seen(logged, "instance=acme", tenant=False) == [
        "evt_7@acme/wh_a", "evt_2@acme/wh_a", "evt_1@global",
    ]  # fmt: skip
    # the tenant sees its own endpoints' rows, never the global endpoint's, on every page
    assert await rows_seen(logged, "instance=acme") == ["evt_7@acme/wh_a", "evt_2@acme/wh_a"]
    assert await rows_seen(logged, "instance=acme&limit=1") == [
        "evt_7@acme/wh_a", "evt_2@acme/wh_a",
    ]  # fmt: skip
    assert await rows_seen(logged, "endpoint=beta-1/wh_b") == ["evt_4@beta-1/wh_b"]
    assert await rows_seen(logged, "instance=beta-1&outcome=dead") == ["evt_4@beta-1/wh_b"]

    for query, status, code in [
        ("instance=acme&endpoint=global", 403, "endpoint_forbidden"),
        ("endpoint=global", 403, "endpoint_forbidden"),
        ("instance=other", 403, "instance_forbidden"),
        ("endpoint=other/wh_o", 403, "instance_forbidden"),
        ("instance=acme&endpoint=other/wh_o", 403, "instance_forbidden"),
        ("event_id=evt_5", 403, "instance_forbidden"),
        ("", 403, "instance_forbidden"),
    ]:
        target = f"/v1/deliveries?{query}" if query else "/v1/deliveries"
        refused(await as_tenant(logged, "GET", target), status, code)


async def test_a_scoped_key_lists_retries_and_recovers_only_its_endpoints(logged: str) -> None:
    async def endpoints(tenant: bool) -> list[str]:
        answer = await (
            as_tenant(logged, "GET", "/v1/endpoints")
            if tenant
            else signed(logged, "GET", "/v1/endpoints")
        )
        return [e["endpoint"] for e in answer.json()["endpoints"]]

    everything = await eventually(lambda: _with_all(endpoints(tenant=False)))
    assert everything == ["acme/wh_a", "beta-1/wh_b", "global", "other/wh_o"]
    assert await endpoints(tenant=True) == ["acme/wh_a", "beta-1/wh_b"]

    since = (NOW - timedelta(hours=1)).isoformat()
    # its own endpoint: accepted (recovery starts; no dead letters in the stream)
    own = await as_tenant(
        logged, "POST", "/v1/deliveries/recover", {"endpoint": "acme/wh_a", "since": since}
    )
    assert own.status_code == 202, own.text
    for endpoint, code in [("global", "endpoint_forbidden"), ("other/wh_o", "instance_forbidden")]:
        for target, payload in [
            ("/v1/deliveries/recover", {"endpoint": endpoint, "since": since}),
            ("/v1/deliveries/retry", {"endpoint": endpoint, "event_id": "evt_5"}),
            ("/v1/endpoints/enable", {"endpoint": endpoint}),
        ]:
            refused(await as_tenant(logged, "POST", target, payload), 403, code)


async def _with_all(listing: Any) -> list[str] | None:
    endpoints: list[str] = await listing
    return endpoints if len(endpoints) == 4 else None
