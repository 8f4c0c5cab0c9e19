"""Starting against NATS as users deploy it: `NATS_URL` listing several servers (a cluster's
nodes, comma-separated), some of them down; and JetStream not answering yet, which the services
wait out, saying so, instead of exiting."""

from __future__ import annotations

import pytest
from nats.js.errors import BadRequestError, ServiceUnavailableError

from wabus import natsbus
from wabus.embedded import free_port
from wabus.natsbus import (
    connect,
    ensure_streams,
    server_urls,
    shared_credentials,
    until_ready,
)
from wabus.settings import Settings


def test_nats_url_lists_servers_separated_by_commas() -> None:
    assert server_urls("nats://a:4222") == ["nats://a:4222"]
    assert server_urls(" nats://u:p@a:4222, nats://b:4222 ,,nats://c:4222") == [
        "nats://u:p@a:4222",
        "nats://b:4222",
        "nats://c:4222",
    ]


def test_credentials_the_urls_share_are_given_for_every_server() -> None:
    """Also for the servers a cluster announces, which the client adds without credentials."""
    assert shared_credentials(["nats://u:p%40ss@a:4222", "nats://u:p%40ss@b:4222"]) == {
        "user": "u",
        "password": "p@ss",
    }
    assert shared_credentials(["nats://tok@a:4222"]) == {"token": "tok"}
    assert shared_credentials(["nats://a:4222", "nats://b:4222"]) == {}
    assert shared_credentials(["nats://u:p@a:4222", "nats://v:q@b:4222"]) == {}  # not shared


async def test_a_list_with_a_dead_server_connects_to_a_live_one(settings: Settings) -> None:
    dead = f"nats://127.0.0.1:{free_port()}"
    listed = settings.model_copy(update={"nats_url": f"{dead},{settings.nats_url}"})
    nc = await connect(listed, "test")
    try:
        await ensure_streams(nc.jetstream(), listed)  # JetStream reachable through the list
        assert nc.connected_url is not None
        assert str(nc.connected_url.port) == str(settings.nats_url).rsplit(":", 1)[1]
    finally:
        await nc.drain()


async def test_a_step_is_retried_while_jetstream_is_not_ready(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(natsbus, "WAIT_MAX_DELAY", 0.01)
    waited: list[str] = []
    monkeypatch.setattr(natsbus.log, "warning", lambda event, **fields: waited.append(event))
    answers: list[Exception | str] = [ServiceUnavailableError(), TimeoutError(), "ready"]

    async def step() -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert await until_ready(step, "streams") == "ready"
    assert waited == ["waiting for NATS", "waiting for NATS"]


async def test_a_refusal_is_not_waited_for() -> None:
    async def step() -> None:
        raise BadRequestError(description="stream name already in use")

    with pytest.raises(BadRequestError):
        await until_ready(step, "streams")
