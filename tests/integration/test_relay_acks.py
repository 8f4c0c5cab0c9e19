"""The relay's acked publishes (`relay.jetstream.Acks`) on a real nats-server, and the replay
guard across two relay processes: what the hot path's shortcuts must not have changed."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from nats.aio.client import Client as NATS
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import APIError, NoStreamResponseError

import relay.jetstream
from relay.app import create_app
from relay.client import signed_headers
from relay.jetstream import Acks
from tests.conftest import API_KEY_ID, API_SECRET
from tests.relay_helpers import commands_stored
from tests.support import running
from wabus.embedded import free_port
from wabus.natsbus import ensure_streams
from wabus.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
TARGET = "/v1/instances/acme/messages"


async def test_concurrent_publishes_each_get_their_own_ack(nc: NATS, settings: Settings) -> None:
    await ensure_streams(nc.jetstream(), settings)
    acks = await Acks.open(nc)
    subject = settings.topology.command("acme", "send")
    answers = await asyncio.gather(
        *(acks.publish(subject, b"{}", {"Nats-Msg-Id": f"cmd_{n % 50}"}) for n in range(100))
    )
    fresh = sorted(sequence for sequence, duplicate in answers if not duplicate)
    assert len(fresh) == 50
    assert len(set(fresh)) == 50  # no ack was handed to another publish
    assert sum(duplicate for _, duplicate in answers) == 50
    assert await commands_stored(nc, settings) == 50


async def test_a_refusal_an_absent_stream_and_silence_are_errors(
    nc: NATS, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    await ensure_streams(nc.jetstream(), settings)
    acks = await Acks.open(nc)
    subject = settings.topology.command("acme", "send")
    with pytest.raises(APIError) as refused:
        await acks.publish(subject, b"{}", {"Nats-Expected-Last-Subject-Sequence": "999"})
    assert refused.value.err_code == 10071  # wrong last sequence: what the replay guard reads
    with pytest.raises(NoStreamResponseError):
        await acks.publish("nowhere.at.all", b"{}", {})
    monkeypatch.setattr(relay.jetstream, "ACK_TIMEOUT_SECONDS", 0.2)
    await nc.subscribe("silent.service", cb=_ignore)  # takes the message, never answers
    with pytest.raises(NatsTimeoutError):
        await acks.publish("silent.service", b"{}", {})


async def _ignore(_: object) -> None:
    return None


@pytest.fixture
def relay_process(settings: Settings) -> Iterator[str]:
    """`python -m relay` in its own process, on the test's nats-server and prefix."""
    port = free_port()
    env = os.environ | {
        "NATS_URL": settings.nats_url or "",
        "PORT": str(port),
        "WABUS_HOST": "127.0.0.1",
        "WABUS_API_KEYS": f"{API_KEY_ID}:{API_SECRET}",
        "WABUS_SUBJECT_PREFIX": settings.subject_prefix,
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    }
    process = subprocess.Popen([sys.executable, "-m", "relay"], env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert process.poll() is None, "the relay process exited at start"
            try:
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise TimeoutError("the relay process did not get ready")
        yield url
    finally:
        process.terminate()
        process.wait(30)


async def test_a_replay_is_refused_by_another_relay_process(
    relay_process: str, nc: NATS, settings: Settings
) -> None:
    body = json.dumps({"to": "5511999999999", "text": "once"}).encode()
    headers = signed_headers(API_KEY_ID, API_SECRET, "POST", TARGET, body, time.time())
    headers["Content-Type"] = "application/json"
    async with running(create_app(settings)) as here, httpx.AsyncClient() as http:
        first = await http.post(here + TARGET, content=body, headers=headers)
        assert first.status_code == 202, first.text
        again = await http.post(relay_process + TARGET, content=body, headers=headers)
        assert (again.status_code, again.json()["code"]) == (401, "replayed_request")
        # and the other way round, with a fresh signature
        headers = signed_headers(API_KEY_ID, API_SECRET, "POST", TARGET, body, time.time() + 1)
        headers["Content-Type"] = "application/json"
        assert (
            await http.post(relay_process + TARGET, content=body, headers=headers)
        ).status_code == 202
        replayed = await http.post(here + TARGET, content=body, headers=headers)
        assert (replayed.status_code, replayed.json()["code"]) == (401, "replayed_request")
    assert await commands_stored(nc, settings) == 2


async def test_one_timer_fails_each_silent_publish_at_its_own_deadline(
    nc: NATS, monkeypatch: pytest.MonkeyPatch
) -> None:
    acks = await Acks.open(nc)
    await nc.subscribe("silent.service", cb=_ignore)
    monkeypatch.setattr(relay.jetstream, "ACK_TIMEOUT_SECONDS", 5.0)
    slow = asyncio.ensure_future(acks.publish("silent.service", b"{}", {}))
    await asyncio.sleep(0.05)
    monkeypatch.setattr(relay.jetstream, "ACK_TIMEOUT_SECONDS", 0.2)
    with pytest.raises(NatsTimeoutError):  # not held back by the earlier, later deadline
        await asyncio.wait_for(acks.publish("silent.service", b"{}", {}), 2.0)
    assert not slow.done()
    slow.cancel()
