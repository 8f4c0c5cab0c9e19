"""Authentication and authorisation against real relays on a real nats-server: every negative
case publishes nothing, and a replay is refused by a second replica too."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from nats.aio.client import Client as NATS

from relay.app import create_app
from relay.client import signed_headers
from tests.conftest import API_KEY_ID, API_SECRET
from tests.relay_helpers import commands_stored, signed
from tests.support import running
from wabus.settings import Settings

TARGET = "/v1/instances/acme/messages"
BODY = json.dumps({"to": "5511999999999", "text": "hi"}).encode()
TENANT_SECRET = "tenant-secret-" + "y" * 20


@pytest.fixture
async def url(settings: Settings, nc: NATS) -> AsyncIterator[str]:
    async with running(create_app(settings)) as base:
        yield base


async def post(
    url: str, headers: dict[str, str], body: bytes = BODY, target: str = TARGET
) -> httpx.Response:
    headers = {"Content-Type": "application/json"} | headers  # a JSON body says so (else 415)
    async with httpx.AsyncClient() as http:
        return await http.post(url + target, content=body, headers=headers)


def good(
    body: bytes = BODY, target: str = TARGET, method: str = "POST", now: float | None = None
) -> dict[str, str]:
    return signed_headers(API_KEY_ID, API_SECRET, method, target, body, now or time.time())


HeaderFactory = Callable[[], dict[str, str]]
CASES: list[tuple[str, HeaderFactory, str, bytes, str]] = [
    ("no-headers", dict, TARGET, BODY, "missing_signature"),
    ("no-signature", lambda: {k: v for k, v in good().items() if k != "X-Wabus-Signature"},
     TARGET, BODY, "missing_signature"),
    ("unknown-key", lambda: good() | {"X-Wabus-Key-Id": "nobody"}, TARGET, BODY, "unknown_key"),
    ("wrong-secret", lambda: signed_headers(API_KEY_ID, "wrong-secret-wrong-secret", "POST",
                                            TARGET, BODY, time.time()),
     TARGET, BODY, "invalid_signature"),
    ("tampered-method", lambda: good(method="PUT"), TARGET, BODY, "invalid_signature"),
    ("tampered-path", lambda: good(target="/v1/instances/other/messages"), TARGET, BODY,
     "invalid_signature"),
    ("tampered-query", lambda: good(target=TARGET + "?wait=0"), TARGET + "?wait=1", BODY,
     "invalid_signature"),
    ("dropped-query", lambda: good(target=TARGET + "?wait=0"), TARGET, BODY, "invalid_signature"),
    ("tampered-body", good, TARGET, BODY.replace(b"hi", b"ho"), "invalid_signature"),
    ("bad-timestamp", lambda: good() | {"X-Wabus-Timestamp": "yesterday"}, TARGET, BODY,
     "invalid_timestamp"),
    ("too-old", lambda: good(now=time.time() - 302), TARGET, BODY, "timestamp_out_of_tolerance"),
    ("too-far-ahead", lambda: good(now=time.time() + 302), TARGET, BODY,
     "timestamp_out_of_tolerance"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "headers", "sent_target", "sent_body", "code"), CASES,
                         ids=[case[0] for case in CASES])  # fmt: skip
async def test_unauthenticated_requests_get_401_and_publish_nothing(
    url: str,
    nc: NATS,
    settings: Settings,
    name: str,
    headers: HeaderFactory,
    sent_target: str,
    sent_body: bytes,
    code: str,
) -> None:
    response = await post(url, headers(), sent_body, sent_target)
    assert response.status_code == 401, name
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"].startswith("WabusHMAC")
    problem = response.json()
    assert problem["code"] == code
    assert problem["request_id"] == response.headers["x-request-id"]
    assert await commands_stored(nc, settings) == 0


async def test_every_signed_route_refuses_an_unsigned_request(url: str) -> None:
    openapi = (await _get(url + "/openapi.json")).json()
    checked = 0
    async with httpx.AsyncClient() as http:
        for path, methods in openapi["paths"].items():
            for method, operation in methods.items():
                if "security" not in operation:
                    continue
                concrete = path.replace("{instance}", "acme").replace("{command_id}", "c1")
                concrete = concrete.replace("{media_id}", "med_" + "0" * 32)
                concrete = concrete.replace("{webhook_id}", "crm")
                concrete = concrete.replace("{jid}", "5511999999999")
                concrete = concrete.replace("{group}", "120363000000000001@g.us")
                response = await http.request(method.upper(), url + concrete)
                assert (response.status_code, response.json()["code"]) == (
                    401,
                    "missing_signature",
                ), (method, path)
                checked += 1
    assert checked == 41  # every signed route of the document (a new one changes this count)


async def test_a_replay_is_refused_by_the_same_and_by_a_second_replica(
    url: str, nc: NATS, settings: Settings
) -> None:
    headers = good()
    assert (await post(url, headers)).status_code == 202
    again = await post(url, headers)
    assert (again.status_code, again.json()["code"]) == (401, "replayed_request")
    async with running(create_app(settings)) as second_replica:
        replayed = await post(second_replica, headers)
        assert (replayed.status_code, replayed.json()["code"]) == (401, "replayed_request")
        # the second replica accepts fresh requests: the refusal was the replay, not the replica
        assert (await signed(second_replica, "POST", TARGET, body=BODY)).status_code == 202
    assert await commands_stored(nc, settings) == 2


async def test_concurrent_copies_on_two_replicas_are_accepted_once(
    url: str, nc: NATS, settings: Settings
) -> None:
    headers = good()
    async with running(create_app(settings)) as second_replica:
        answers = await asyncio.gather(*(post(base, headers) for base in [url, second_replica] * 4))
    assert sorted(r.status_code for r in answers) == [202] + [401] * 7
    assert await commands_stored(nc, settings) == 1


@pytest.fixture
async def scoped_url(settings: Settings, nc: NATS) -> AsyncIterator[str]:
    scoped = settings.model_copy(
        update={
            "api_keys": [
                f"{API_KEY_ID}:{API_SECRET}",
                f"tenant@acme|beta-*:{TENANT_SECRET}",
            ]
        }
    )
    async with running(create_app(scoped)) as base:
        yield base


async def test_a_key_scoped_to_other_instances_is_refused(
    scoped_url: str, nc: NATS, settings: Settings
) -> None:
    message = {"to": "5511999999999", "text": "hi"}
    for target in ["/v1/instances/acme/messages", "/v1/instances/beta-1/messages"]:
        assert (
            await signed(scoped_url, "POST", target, message, key_id="tenant", secret=TENANT_SECRET)
        ).status_code == 202
    refused = [
        ("POST", "/v1/instances/other/messages", message),
        ("GET", "/v1/instances/other", None),
        ("GET", "/v1/instances/other/status", None),
        ("GET", "/v1/instances/other/qr.png", None),
        ("DELETE", "/v1/instances/other", None),
        ("PATCH", "/v1/instances/other", {"desired_state": "stopped"}),
        ("POST", "/v1/instances/other/webhooks", {"url": "https://x.example.com"}),
        ("POST", "/v1/instances/other/logout", None),
        ("POST", "/v1/instances", {"id": "other"}),
        ("POST", "/api/send", {"instanceId": "other", "to": "5511999999999", "message": "x"}),
        ("GET", "/api/status/other", None),
    ]
    for method, target, payload in refused:
        response = await signed(
            scoped_url, method, target, payload, key_id="tenant", secret=TENANT_SECRET
        )
        assert (response.status_code, response.json()["code"]) == (403, "instance_forbidden"), (
            target
        )
    assert await commands_stored(nc, settings) == 2

    # listing shows only the key's instances
    for instance in ("acme", "other", "beta-2"):
        await signed(scoped_url, "POST", "/v1/instances", {"id": instance})
    listed = (
        await signed(scoped_url, "GET", "/v1/instances", key_id="tenant", secret=TENANT_SECRET)
    ).json()
    assert [i["id"] for i in listed["instances"]] == ["acme", "beta-2"]
    everything = (await signed(scoped_url, "GET", "/v1/instances")).json()
    assert [i["id"] for i in everything["instances"]] == ["acme", "beta-2", "other"]


async def test_rate_limit_answers_429_without_consuming_the_signature(
    settings: Settings, nc: NATS
) -> None:
    limited = settings.model_copy(update={"rate_limit": 5.0, "rate_burst": 1})
    async with running(create_app(limited)) as base:
        first = b'{"to":"5511999999999","text":"1"}'
        assert (await post(base, good(body=first), body=first)).status_code == 202
        headers = good()
        over = await post(base, headers)
        assert (over.status_code, over.json()["code"]) == (429, "rate_limited")
        assert int(over.headers["retry-after"]) >= 1
        assert await commands_stored(nc, settings) == 1
        await asyncio.sleep(0.25)
        assert (await post(base, headers)).status_code == 202
    assert await commands_stored(nc, settings) == 2


async def _get(url: str) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.get(url)
