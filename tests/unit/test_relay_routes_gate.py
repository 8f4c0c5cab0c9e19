"""The gate every signed route runs (signature, replay, rate, scope, query, media type) and the
app's bootstrap, in-process on fakes: the real `create_app`, no NATS."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from relay.client import signed_headers
from tests.conftest import API_KEY_ID, API_SECRET
from tests.fakes import Fakes
from tests.relay_helpers import (
    TENANT,
    TENANT_SECRET,
    refused,
    relay_on,
    route_settings,
    signed_in_process,
)

SEND = "/v1/instances/acme/messages"
TEXT = {"to": "5511999999999", "text": "hi"}


async def test_the_lifespan_opens_the_stores_once_and_closes_them(fakes: Fakes) -> None:
    async with relay_on(fakes) as client:
        assert (fakes.opened, fakes.closed) == (1, 0)
        assert (await client.get("/healthz")).status_code == 200
    assert (fakes.opened, fakes.closed) == (1, 1)


async def test_a_signed_send_passes_the_gate(relay: httpx.AsyncClient, fakes: Fakes) -> None:
    """The positive control of every refusal below: the same request, correctly signed."""
    answer = await signed_in_process(relay, "POST", SEND, TEXT)
    assert answer.status_code == 202, answer.text
    assert len(fakes.commands.published) == 1
    assert fakes.replay.seen == set()  # v2: the command's id is the replay guard


async def test_a_v1_signed_send_is_recorded_by_the_replay_guard(
    relay: httpx.AsyncClient, fakes: Fakes
) -> None:
    body = b'{"to": "5511999999999", "text": "hi"}'
    sent = signed_headers(API_KEY_ID, API_SECRET, "POST", SEND, body, time.time(), version=1)
    sent["Content-Type"] = "application/json"
    assert (await relay.post(SEND, content=body, headers=sent)).status_code == 202
    assert len(fakes.commands.published) == 1
    assert fakes.replay.seen == {sent["X-Wabus-Signature"]}


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_signature"),
        ({"X-Wabus-Key-Id": "nobody"}, "unknown_key"),
        ({"X-Wabus-Signature": "v1=" + "0" * 64}, "invalid_signature"),
        ({"X-Wabus-Timestamp": "yesterday"}, "invalid_timestamp"),
    ],
    ids=["no-headers", "unknown-key", "wrong-signature", "bad-timestamp"],
)
async def test_unauthenticated_requests_get_401_and_publish_nothing(
    relay: httpx.AsyncClient, fakes: Fakes, headers: dict[str, str], code: str
) -> None:
    body = b'{"to": "5511999999999", "text": "hi"}'
    sent = (
        signed_headers(API_KEY_ID, API_SECRET, "POST", SEND, body, time.time()) if headers else {}
    )
    sent |= headers | {"Content-Type": "application/json"}
    answer = await relay.post(SEND, content=body, headers=sent)
    refused(answer, 401, code)
    assert answer.headers["www-authenticate"] == 'WabusHMAC realm="wabus"'
    assert fakes.commands.published == []


async def test_a_stale_timestamp_is_refused(relay: httpx.AsyncClient, fakes: Fakes) -> None:
    refused(
        await signed_in_process(relay, "POST", SEND, TEXT, now=time.time() - 302),
        401,
        "timestamp_out_of_tolerance",
    )
    assert fakes.commands.published == []


@pytest.mark.parametrize("version", [1, 2])
async def test_a_replayed_request_is_refused_by_the_replay_guard(
    relay: httpx.AsyncClient, fakes: Fakes, version: int
) -> None:
    target = SEND + "?nonce=fixed"
    body = b'{"to": "5511999999999", "text": "hi"}'
    now = time.time()
    headers = signed_headers(API_KEY_ID, API_SECRET, "POST", target, body, now, version=version)
    headers["Content-Type"] = "application/json"
    assert (await relay.post(target, content=body, headers=headers)).status_code == 202
    refused(await relay.post(target, content=body, headers=headers), 401, "replayed_request")
    assert len(fakes.commands.published) == 1


async def test_over_its_rate_a_key_gets_429_with_retry_after(fakes: Fakes) -> None:
    async with relay_on(fakes, route_settings(rate_limit=0.5, rate_burst=2)) as relay:
        answers = [await signed_in_process(relay, "GET", "/v1/instances") for _ in range(3)]
    assert [answer.status_code for answer in answers[:2]] == [200, 200]
    refused(answers[2], 429, "rate_limited")
    assert int(answers[2].headers["retry-after"]) >= 1


async def test_over_its_body_bytes_a_key_gets_429_and_keeps_its_request_token(
    fakes: Fakes,
) -> None:
    """Bodies cost their bytes (inline media costs the relay by its size): a key past its rate
    of body bytes is refused before anything is validated or queued, the refused request's
    token given back. Positive controls: the first large body and a small one pass."""
    media = {"to": "5511999999999", "type": "image", "base64": "A" * 1800}
    limits = route_settings(
        rate_limit=0.001, rate_burst=3, rate_limit_bytes=10, rate_burst_bytes=3000
    )
    async with relay_on(fakes, limits) as relay:
        first = await signed_in_process(relay, "POST", SEND, media)
        second = await signed_in_process(relay, "POST", SEND, media)
        smalls = [await signed_in_process(relay, "POST", SEND, TEXT) for _ in range(3)]
    assert first.status_code == 202, first.text
    refused(second, 429, "rate_limited")
    assert "rate of body bytes" in second.json()["detail"]
    assert int(second.headers["retry-after"]) >= 1
    # a burst of 3 requests: the first and two small ones, since the refused one was given back
    assert [answer.status_code for answer in smalls[:2]] == [202, 202]
    refused(smalls[2], 429, "rate_limited")
    assert "rate limit" in smalls[2].json()["detail"]
    assert len(fakes.commands.published) == 3


async def test_a_scoped_key_is_refused_outside_its_scope(
    relay: httpx.AsyncClient, fakes: Fakes
) -> None:
    as_tenant: dict[str, Any] = {"key_id": TENANT, "secret": TENANT_SECRET}
    answer = await signed_in_process(relay, "POST", SEND, TEXT, **as_tenant)
    assert answer.status_code == 202, answer.text
    other = "/v1/instances/other/messages"
    refused(
        await signed_in_process(relay, "POST", other, TEXT, **as_tenant), 403, "instance_forbidden"
    )
    assert [sent.envelope["instance"] for sent in fakes.commands.published] == ["acme"]


async def test_an_invalid_instance_id_is_404(relay: httpx.AsyncClient) -> None:
    refused(
        await signed_in_process(relay, "POST", "/v1/instances/ACME/messages", TEXT),
        404,
        "unknown_instance",
    )


async def test_queries_are_validated_before_the_handler(
    relay: httpx.AsyncClient, fakes: Fakes
) -> None:
    refused(await signed_in_process(relay, "POST", SEND + "?wait=-1", TEXT), 422, "invalid_query")
    refused(
        await signed_in_process(relay, "POST", SEND + "?colour=red", TEXT), 422, "invalid_query"
    )
    refused(
        await signed_in_process(relay, "GET", "/v1/instances?nonce=" + "!" * 8, nonce=False),
        422,
        "invalid_query",
    )
    assert fakes.commands.published == []


async def test_a_body_that_is_not_json_is_415(relay: httpx.AsyncClient, fakes: Fakes) -> None:
    answer = await signed_in_process(
        relay, "POST", SEND, body=b"to=1", headers={"Content-Type": "text/plain"}
    )
    refused(answer, 415, "unsupported_media_type")
    assert fakes.commands.published == []


async def test_a_body_over_the_limit_is_413(fakes: Fakes) -> None:
    async with relay_on(fakes, route_settings(max_body_bytes=64)) as relay:
        big = {"id": "acme", "webhooks": [{"url": "https://example.com/" + "a" * 80}]}
        refused(await signed_in_process(relay, "POST", "/v1/instances", big), 413, "body_too_large")
    assert fakes.instances.stored == {}


async def test_readyz_reports_the_bus_health(relay: httpx.AsyncClient, fakes: Fakes) -> None:
    assert (await relay.get("/readyz")).json() == {
        "status": "ready",
        "checks": {"nats": True, "streams": True},
    }
    fakes.health.results["streams"] = False
    answer = await relay.get("/readyz")
    assert (answer.status_code, answer.json()["status"]) == (503, "not_ready")


async def test_unsigned_routes_stay_unsigned(relay: httpx.AsyncClient) -> None:
    assert (await relay.get("/health")).json() == {"status": "ok"}
    assert (await relay.get("/openapi.json")).status_code == 200
    refused(await relay.get("/v1/instances"), 401, "missing_signature")
