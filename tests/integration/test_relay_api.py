"""The send route against a real relay (uvicorn on a loopback port) and a real nats-server."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from nats.aio.client import Client as NATS

from relay.app import create_app
from relay.client import RelayClient, signed_headers
from tests.conftest import API_KEY_ID, API_SECRET
from tests.support import running
from wabus.settings import Settings

TARGET = "/v1/instances/acme/messages"
BODY = json.dumps({"to": "5511999999999", "text": "hi"}).encode()


@pytest.fixture
async def relay_url(settings: Settings, nc: NATS) -> AsyncIterator[str]:
    async with running(create_app(settings)) as url:
        yield url


async def commands_stored(nc: NATS, settings: Settings) -> int:
    info = await nc.jetstream().stream_info(settings.topology.commands_stream)
    return int(info.state.messages)


async def test_a_signed_send_is_accepted_and_stored_as_a_command(
    relay_url: str, nc: NATS, settings: Settings
) -> None:
    async with RelayClient(relay_url, API_KEY_ID, API_SECRET) as client:
        answer = await client.send_text("acme", "+55 11 99999-9999", "hello")
    assert answer["status"] == "accepted"
    js = nc.jetstream()
    stored = await js.get_last_msg(
        settings.topology.commands_stream, "*.cmd.acme.send".replace("*", settings.subject_prefix)
    )
    assert stored.data
    command = json.loads(stored.data)
    assert command["id"] == answer["command_id"]
    assert command["type"] == "send"
    assert command["instance"] == "acme"
    assert command["data"] == {
        "type": "text", "to": "5511999999999", "text": "hello", "reply_to": None, "mentions": [],
    }  # fmt: skip
    assert stored.headers
    assert stored.headers["Nats-Msg-Id"] == answer["command_id"]


async def test_idempotency_key_becomes_the_command_id_and_deduplicates(
    relay_url: str, nc: NATS, settings: Settings
) -> None:
    # The retry is signed a second later: the same signature twice would be a replay (401).
    offsets = iter([0, 1])
    async with RelayClient(
        relay_url, API_KEY_ID, API_SECRET, clock=lambda: time.time() + next(offsets)
    ) as client:
        first = await client.send_text("acme", "5511999999999", "once", idempotency_key="order-42")
        again = await client.send_text("acme", "5511999999999", "once", idempotency_key="order-42")
    assert first["command_id"] == again["command_id"] == "order-42"
    assert (first["duplicate"], again["duplicate"]) == (False, True)
    assert await commands_stored(nc, settings) == 1


async def raw_post(
    url: str, headers: dict[str, str], body: bytes = BODY, target: str = TARGET
) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.post(url + target, content=body, headers=headers)


async def get(url: str) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.get(url)


def good_headers(
    body: bytes = BODY, target: str = TARGET, method: str = "POST", now: float | None = None
) -> dict[str, str]:
    return signed_headers(API_KEY_ID, API_SECRET, method, target, body, now or time.time())


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_signature"),
        (good_headers() | {"X-Wabus-Key-Id": "nobody"}, "unknown_key"),
        (
            signed_headers(
                API_KEY_ID, "wrong-secret-wrong-secret", "POST", TARGET, BODY, time.time()
            ),
            "invalid_signature",
        ),
        (good_headers(method="PUT"), "invalid_signature"),
        (good_headers(target="/v1/instances/other/messages"), "invalid_signature"),
        (good_headers(body=b"{}"), "invalid_signature"),
        (good_headers(now=time.time() - 400), "timestamp_out_of_tolerance"),
        (good_headers(now=time.time() + 400), "timestamp_out_of_tolerance"),
    ],
)
async def test_unauthenticated_requests_get_401_and_publish_nothing(
    relay_url: str, nc: NATS, settings: Settings, headers: dict[str, str], code: str
) -> None:
    response = await raw_post(relay_url, headers)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code
    assert await commands_stored(nc, settings) == 0


async def test_a_replayed_request_is_refused(relay_url: str, nc: NATS, settings: Settings) -> None:
    headers = good_headers()
    assert (await raw_post(relay_url, headers)).status_code == 202
    replay = await raw_post(relay_url, headers)
    assert replay.status_code == 401
    assert replay.json()["code"] == "replayed_request"
    assert await commands_stored(nc, settings) == 1


@pytest.mark.parametrize(
    ("payload", "fields"),
    [
        ({"to": "5511999999999"}, {"text"}),
        ({"to": "nobody", "text": "hi"}, {"to"}),
        ({"text": ""}, {"to", "text"}),
        ({"to": "5511999999999", "text": "hi", "colour": "red"}, {"colour"}),
    ],
)
async def test_invalid_bodies_get_422_naming_the_fields(
    relay_url: str, nc: NATS, settings: Settings, payload: dict[str, str], fields: set[str]
) -> None:
    body = json.dumps(payload).encode()
    response = await raw_post(relay_url, good_headers(body=body), body=body)
    assert response.status_code == 422
    problem = response.json()
    assert problem["code"] == "invalid_body"
    assert {error["field"] for error in problem["errors"]} == fields
    assert await commands_stored(nc, settings) == 0


async def test_malformed_json_and_oversized_bodies(
    relay_url: str, nc: NATS, settings: Settings
) -> None:
    body = b"{not json"
    malformed = await raw_post(relay_url, good_headers(body=body), body=body)
    assert (malformed.status_code, malformed.json()["code"]) == (422, "invalid_json")
    huge = b"x" * (settings.max_body_bytes + 1)
    response = await raw_post(relay_url, good_headers(body=huge), body=huge)
    assert response.status_code == 413
    assert response.json()["code"] == "body_too_large"
    assert await commands_stored(nc, settings) == 0


async def test_bad_idempotency_key_and_instance_id(
    relay_url: str, nc: NATS, settings: Settings
) -> None:
    headers = good_headers() | {"Idempotency-Key": "has spaces"}
    assert (await raw_post(relay_url, headers)).json()["code"] == "invalid_idempotency_key"
    target = "/v1/instances/Bad.Id/messages"
    response = await raw_post(relay_url, good_headers(target=target), target=target)
    assert (response.status_code, response.json()["code"]) == (404, "unknown_instance")
    assert await commands_stored(nc, settings) == 0


async def test_health_routes_are_unsigned(relay_url: str) -> None:
    assert (await get(relay_url + "/healthz")).json() == {"status": "ok"}
    ready = await get(relay_url + "/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"nats": True, "streams": True}
    metrics = await get(relay_url + "/metrics")
    assert metrics.status_code == 200
    assert "python_info" in metrics.text
    missing = await get(relay_url + "/v1/nothing-here")
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
