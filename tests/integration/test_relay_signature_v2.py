"""The `v2` signature against real relays on a real nats-server: it signs the Idempotency-Key
too, so a send's command id (the key, or one derived from the signature) is its replay guard,
one JetStream round trip instead of two. Each refusal has its positive control: the genuine
request, accepted after it."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StreamConfig
from nats.js.errors import NotFoundError

from relay.app import create_app
from relay.auth import sign_request, sign_request_v2
from relay.client import signed_headers
from relay.replay import WINDOW_SECONDS
from schemas.streams import stream_specs
from schemas.subjects import Topology
from tests.conftest import API_KEY_ID, API_SECRET
from tests.relay_helpers import commands_stored
from tests.support import running
from wabus.settings import Settings

TARGET = "/v1/instances/acme/messages"
BODY = json.dumps({"to": "5511999999999", "text": "hi"}).encode()


@pytest.fixture
async def url(settings: Settings, nc: NATS) -> AsyncIterator[str]:
    async with running(create_app(settings)) as base:
        yield base


def v2(key: str | None = None, target: str = TARGET, now: float | None = None) -> dict[str, str]:
    return signed_headers(API_KEY_ID, API_SECRET, "POST", target, BODY, now or time.time(), key)


async def post(url: str, headers: dict[str, str], target: str = TARGET) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.post(
            url + target, content=BODY, headers={"Content-Type": "application/json"} | headers
        )


async def replay_records(nc: NATS, settings: Settings) -> int:
    """Signatures in the replay guard's KV bucket (0 when it was never written)."""
    try:
        info = await nc.jetstream().stream_info("KV_" + settings.topology.replay_bucket)
    except NotFoundError:
        return 0
    return int(info.state.messages)


def code(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json().get("code", "")


async def test_a_replayed_v2_send_is_refused_by_every_replica_and_published_once(
    url: str, nc: NATS, settings: Settings
) -> None:
    headers = v2()
    first = await post(url, headers)
    assert first.status_code == 202, first.text
    assert code(await post(url, headers)) == (401, "replayed_request")
    async with running(create_app(settings)) as second_replica:
        assert code(await post(second_replica, headers)) == (401, "replayed_request")
        # positive control: a fresh v2 send on the second replica is accepted
        assert (
            await post(second_replica, v2(target=TARGET + "?nonce=2"), TARGET + "?nonce=2")
        ).status_code == 202
    assert await commands_stored(nc, settings) == 2
    assert await replay_records(nc, settings) == 0  # one round trip: no replay record written


async def test_a_v2_replay_is_refused_after_the_connector_took_the_command(
    url: str, nc: NATS, settings: Settings
) -> None:
    """The duplicate window outlives the work queue's copy: acked and gone, still a replay."""
    headers = v2()
    assert (await post(url, headers)).status_code == 202
    js = nc.jetstream()
    stream = settings.topology.commands_stream
    await js.add_consumer(
        stream, ConsumerConfig(durable_name="taker", ack_policy=AckPolicy.EXPLICIT)
    )
    taker = await js.pull_subscribe_bind("taker", stream)
    for message in await taker.fetch(1, timeout=5):
        await message.ack_sync()
    assert await commands_stored(nc, settings) == 0
    assert code(await post(url, headers)) == (401, "replayed_request")
    assert await commands_stored(nc, settings) == 0
    control = v2(target=TARGET + "?nonce=c")
    assert (await post(url, control, TARGET + "?nonce=c")).status_code == 202
    assert await commands_stored(nc, settings) == 1


async def test_a_replayed_v2_send_with_a_key_is_the_idempotent_answer(
    url: str, nc: NATS, settings: Settings
) -> None:
    headers = v2("order-7")
    first = await post(url, headers)
    again = await post(url, headers)
    assert first.status_code == again.status_code == 202
    assert first.json()["command_id"] == again.json()["command_id"] == "order-7"
    assert (first.json()["duplicate"], again.json()["duplicate"]) == (False, True)
    assert await commands_stored(nc, settings) == 1


@pytest.mark.parametrize(
    ("signed_key", "sent_key"),
    [("order-1", "order-2"), (None, "order-1"), ("order-1", None)],
    ids=["changed", "added", "removed"],
)
async def test_a_v2_send_whose_key_was_tampered_with_is_401(
    url: str, nc: NATS, settings: Settings, signed_key: str | None, sent_key: str | None
) -> None:
    genuine = v2(signed_key)
    tampered = {k: v for k, v in genuine.items() if k != "Idempotency-Key"}
    if sent_key is not None:
        tampered["Idempotency-Key"] = sent_key
    assert code(await post(url, tampered)) == (401, "invalid_signature")
    assert await commands_stored(nc, settings) == 0
    # positive control: the same signature with the key it was made for is accepted once
    assert (await post(url, genuine)).status_code == 202
    assert await commands_stored(nc, settings) == 1


async def test_v1_is_unchanged_its_replay_with_a_key_added_is_refused(
    url: str, nc: NATS, settings: Settings
) -> None:
    """v1 does not sign the key, so its guard stays the replay record: adding a key (a new
    command id) to a captured v1 send is still a replay."""
    now = int(time.time())
    v1 = {
        "X-Wabus-Key-Id": API_KEY_ID,
        "X-Wabus-Timestamp": str(now),
        "X-Wabus-Signature": sign_request(API_SECRET.encode(), now, "POST", TARGET, BODY),
    }
    assert (await post(url, v1)).status_code == 202
    assert await replay_records(nc, settings) == 1
    assert code(await post(url, v1 | {"Idempotency-Key": "new-id"})) == (401, "replayed_request")
    assert code(await post(url, v1)) == (401, "replayed_request")
    assert await commands_stored(nc, settings) == 1


async def test_a_signature_mixing_v1_and_v2_is_refused(
    url: str, nc: NATS, settings: Settings
) -> None:
    """Mixed, one version's value could be stripped off for a replay under the other's guard."""
    now = int(time.time())
    secret = API_SECRET.encode()
    one = sign_request(secret, now, "POST", TARGET, BODY)
    two = sign_request_v2(secret, now, "POST", TARGET, None, BODY)
    base = {"X-Wabus-Key-Id": API_KEY_ID, "X-Wabus-Timestamp": str(now)}
    for mixed in (f"{one}, {two}", f"{two},{one}"):
        answer = await post(url, base | {"X-Wabus-Signature": mixed})
        assert code(answer) == (401, "invalid_signature")
    assert await commands_stored(nc, settings) == 0
    # positive controls: each alone is accepted, once
    assert (await post(url, base | {"X-Wabus-Signature": one})).status_code == 202
    assert (await post(url, base | {"X-Wabus-Signature": two})).status_code == 202
    assert await commands_stored(nc, settings) == 2


async def test_a_v2_request_that_publishes_nothing_keeps_the_replay_record(
    url: str, nc: NATS, settings: Settings
) -> None:
    target = "/v1/instances?nonce=fixed"
    headers = signed_headers(API_KEY_ID, API_SECRET, "GET", target, b"", time.time())
    async with httpx.AsyncClient() as http:
        assert (await http.get(url + target, headers=headers)).status_code == 200
        assert code(await http.get(url + target, headers=headers)) == (401, "replayed_request")
    assert await replay_records(nc, settings) == 1


async def test_the_commands_duplicate_window_outlasts_the_replay_window(
    settings: Settings, nc: NATS
) -> None:
    """An existing stream with a shorter window (an older release's) is brought up to it."""
    spec = next(s for s in stream_specs(settings.topology) if s.name.endswith("_COMMANDS"))
    assert spec.duplicate_window_seconds >= WINDOW_SECONDS
    js = nc.jetstream()
    await js.add_stream(
        StreamConfig(
            name=spec.name,
            subjects=list(spec.subjects),
            retention=RetentionPolicy.WORK_QUEUE,
            duplicate_window=120.0,
            max_age=spec.max_age_seconds,
        )
    )
    assert (await js.stream_info(spec.name)).config.duplicate_window == 120.0
    async with running(create_app(settings)):
        info = await js.stream_info(spec.name)
    assert info.config.duplicate_window == spec.duplicate_window_seconds
    assert Topology(settings.subject_prefix).commands_stream == spec.name
