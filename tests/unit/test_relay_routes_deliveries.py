"""Delivery routes (the log, retry, recover, endpoints and enabling one) in-process, on a fake of
the deliveries port: what each route asks of it and answers, and what a scoped key may see."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from relay.delivery.policy import DeadLetter
from relay.delivery.records import Attempt
from relay.delivery.states import Disabled
from relay.delivery.targets import Target
from relay.webhooks.signature import WebhookSecret, new_secret
from tests.fakes import FakeDeliveries, Fakes
from tests.relay_helpers import (
    TENANT,
    TENANT_SECRET,
    dead_attempt,
    refused,
    signed_in_process,
)

AS_TENANT: dict[str, Any] = {"key_id": TENANT, "secret": TENANT_SECRET}
NOW = datetime.now(UTC)


def target(key: str, instance: str | None) -> Target:
    return Target(
        key=key,
        url=f"https://hooks.example.com/{key}",
        secret=WebhookSecret(new_secret()),
        instance=instance,
    )


def attempt(number: int, instance: str, endpoint: str) -> Attempt:
    return dead_attempt(number, instance, endpoint, NOW)


@pytest.fixture
async def fakes() -> Fakes:
    deliveries = FakeDeliveries(
        target("global", None), target("acme/wh_a", "acme"), target("other/wh_o", "other")
    )
    for number, (instance, endpoint) in enumerate(
        [("acme", "global"), ("acme", "acme/wh_a"), ("other", "other/wh_o")], start=1
    ):
        await deliveries.log.record(attempt(number, instance, endpoint))
    return Fakes(deliveries=deliveries)


async def test_the_log_lists_rows_newest_first_and_pages_on(
    relay: httpx.AsyncClient, fakes: Fakes
) -> None:
    page = (await signed_in_process(relay, "GET", "/v1/deliveries?limit=2")).json()
    assert [(row["event_id"], row["endpoint"]) for row in page["deliveries"]] == [
        ("evt_3", "other/wh_o"),
        ("evt_2", "acme/wh_a"),
    ]
    assert page["next"] == page["deliveries"][-1]["id"]
    last = (await signed_in_process(relay, "GET", "/v1/deliveries?limit=5")).json()
    assert last["next"] is None
    query = fakes.deliveries.log.queries[0]
    assert (query.limit, query.instance, query.endpoint) == (2, None, None)


async def test_an_endpoint_filter_names_its_instance(
    relay: httpx.AsyncClient, fakes: Fakes
) -> None:
    answer = await signed_in_process(relay, "GET", "/v1/deliveries?endpoint=acme/wh_a")
    assert answer.status_code == 200
    query = fakes.deliveries.log.queries[0]
    assert (query.endpoint, query.instance) == ("acme/wh_a", "acme")


async def test_a_scoped_key_sees_only_rows_of_its_own_endpoints(
    relay: httpx.AsyncClient, fakes: Fakes
) -> None:
    mine = await signed_in_process(relay, "GET", "/v1/deliveries?instance=acme", **AS_TENANT)
    assert [row["endpoint"] for row in mine.json()["deliveries"]] == ["acme/wh_a"]
    refused(
        await signed_in_process(relay, "GET", "/v1/deliveries", **AS_TENANT),
        403,
        "instance_forbidden",
    )
    refused(
        await signed_in_process(relay, "GET", "/v1/deliveries?endpoint=global", **AS_TENANT),
        403,
        "endpoint_forbidden",
    )
    other = "/v1/deliveries?instance=other"
    refused(await signed_in_process(relay, "GET", other, **AS_TENANT), 403, "instance_forbidden")


async def test_without_the_log_the_log_routes_are_409(
    relay: httpx.AsyncClient, fakes: Fakes
) -> None:
    fakes.deliveries.log.enabled = False
    refused(await signed_in_process(relay, "GET", "/v1/deliveries"), 409, "delivery_log_off")
    retry = {"event_id": "evt_2", "endpoint": "acme/wh_a"}
    refused(
        await signed_in_process(relay, "POST", "/v1/deliveries/retry", retry),
        409,
        "delivery_log_off",
    )
    assert fakes.deliveries.retried == []


async def test_retry_answers_how_the_attempt_went(relay: httpx.AsyncClient, fakes: Fakes) -> None:
    retry = {"event_id": "evt_2", "endpoint": "acme/wh_a"}
    delivered = await signed_in_process(relay, "POST", "/v1/deliveries/retry", retry)
    assert delivered.json() == {"delivered": True, "attempt": 2, "outcome": "delivered"}
    fakes.deliveries.decision = DeadLetter("500 again")
    dead = await signed_in_process(relay, "POST", "/v1/deliveries/retry", retry)
    assert dead.json() == {"delivered": False, "attempt": 2, "outcome": "dead"}
    assert fakes.deliveries.retried == [("evt_2", "acme/wh_a")] * 2


@pytest.mark.parametrize(
    ("retry", "status", "code"),
    [
        ({"event_id": "evt_2", "endpoint": "acme/nope"}, 404, "unknown_endpoint"),
        ({"event_id": "evt_9", "endpoint": "acme/wh_a"}, 404, "unknown_delivery"),
        ({"event_id": "evt_gone", "endpoint": "acme/wh_a"}, 410, "event_expired"),
        ({"event_id": "evt_2", "endpoint": "acme wh"}, 422, "invalid_body"),
    ],
)
async def test_a_retry_that_cannot_be_made_says_why(
    relay: httpx.AsyncClient, fakes: Fakes, retry: dict[str, str], status: int, code: str
) -> None:
    await fakes.deliveries.log.record(replace(attempt(9, "acme", "acme/wh_a"), event_id="evt_gone"))
    fakes.deliveries.gone.add("evt_gone")
    refused(await signed_in_process(relay, "POST", "/v1/deliveries/retry", retry), status, code)
    assert fakes.deliveries.retried == []


async def test_recover_starts_over_a_time_range(relay: httpx.AsyncClient, fakes: Fakes) -> None:
    fakes.deliveries.dead_letters = 7
    since = (NOW - timedelta(hours=1)).isoformat()
    answer = await signed_in_process(
        relay, "POST", "/v1/deliveries/recover", {"endpoint": "acme/wh_a", "since": since}
    )
    assert answer.status_code == 202
    assert answer.json() == {"endpoint": "acme/wh_a", "events": 7}
    [(endpoint, start, until)] = fakes.deliveries.recovered
    assert endpoint == "acme/wh_a"
    assert start < until  # `until` defaults to now
    backwards = {"endpoint": "acme/wh_a", "since": since, "until": since}
    refused(
        await signed_in_process(relay, "POST", "/v1/deliveries/recover", backwards),
        422,
        "invalid_range",
    )
    by_tenant = {"endpoint": "global", "since": since}
    refused(
        await signed_in_process(relay, "POST", "/v1/deliveries/recover", by_tenant, **AS_TENANT),
        403,
        "endpoint_forbidden",
    )
    assert len(fakes.deliveries.recovered) == 1


async def test_endpoints_show_their_state_and_one_is_enabled_again(
    relay: httpx.AsyncClient, fakes: Fakes
) -> None:
    fakes.deliveries.states.off["acme/wh_a"] = Disabled("410 Gone", NOW.isoformat())
    listed = (await signed_in_process(relay, "GET", "/v1/endpoints")).json()["endpoints"]
    assert [(e["endpoint"], e["disabled"]) for e in listed] == [
        ("acme/wh_a", True),
        ("global", False),
        ("other/wh_o", False),
    ]
    assert listed[0]["disabled_reason"] == "410 Gone"
    mine = (await signed_in_process(relay, "GET", "/v1/endpoints", **AS_TENANT)).json()
    assert [e["endpoint"] for e in mine["endpoints"]] == ["acme/wh_a"]

    enabled = await signed_in_process(
        relay, "POST", "/v1/endpoints/enable", {"endpoint": "acme/wh_a"}, **AS_TENANT
    )
    assert (enabled.status_code, enabled.json()["disabled"]) == (200, False)
    assert fakes.deliveries.states.off == {}
    unknown = {"endpoint": "acme/nope"}
    refused(
        await signed_in_process(relay, "POST", "/v1/endpoints/enable", unknown),
        404,
        "unknown_endpoint",
    )
