"""Webhook delivery on the least-privilege users of `infra/nats/`: the real relay, connected as the
`relay` user, disables an endpoint that answers 410 and publishes `webhook.endpoint_disabled`
into `WA_EVENTS`; and it dead-letters, recovers and turns a reply into a send command. Whatever
the relay stores is read back as the other users, and the server's log shows the relay user met
no permission violation on the way. A permission the delivery path needs and `accounts.conf`
lacks fails these tests.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from relay.app import create_app
from relay.client import RelayClient
from relay.delivery.presence import RelayPresence
from relay.webhooks.signature import new_secret
from schemas.envelope import encode, make_event
from schemas.events import MessageKind, MessageReceived
from tests.conftest import API_KEY_ID, API_SECRET
from tests.integration.test_infra_nats import (
    Node,
    client,
    jetstream_ready,
    nats_nodes,
    service_settings,
)
from tests.support import Receiver, eventually, running
from wabus.settings import Settings

INSTANCE = "acme"
NOTICES = "wa.evt.*.webhook.>"
NOTICE_SUBJECT = f"wa.evt.{INSTANCE}.webhook.endpoint_disabled"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    """One nats-server started from `infra/nats/nats.conf` (and so `accounts.conf`)."""
    with nats_nodes([("nats.conf", {"NATS_STORE_DIR": str(tmp_path / "js")})], tmp_path) as nodes:
        yield nodes[0]


@dataclass
class Relay:
    settings: Settings
    api: RelayClient


@contextlib.asynccontextmanager
async def relay_on_its_user(node: Node, receiver: Receiver, tmp_path: Path) -> AsyncIterator[Relay]:
    """The relay app, connected as `relay`, delivering to `receiver` as the global endpoint."""
    async with running(receiver.app()) as receiver_url:
        settings = service_settings(
            node.url("relay"),
            api_keys=[f"{API_KEY_ID}:{API_SECRET}"],
            webhook_url=receiver_url + "/hook",
            webhook_secret=receiver.secret,
            webhook_allow_cidrs=["127.0.0.0/8"],
            webhook_retry_schedule=(0.0, 0.1),
            host="127.0.0.1",
            data_dir=tmp_path / "data",
        )
        async with (
            running(create_app(settings)) as relay_url,
            RelayClient(relay_url, API_KEY_ID, API_SECRET) as api,
        ):
            await eventually(lambda: _ready(relay_url), timeout=15)
            yield Relay(settings, api)


async def _ready(relay_url: str) -> bool:
    async with httpx.AsyncClient(timeout=5) as http:
        return (await http.get(relay_url + "/readyz")).status_code == 200


async def publish_message(connector: NATS, number: int) -> str:
    """An inbound message event, published as the connector publishes it (its own user)."""
    message = MessageReceived(
        message_id=f"3EB0{number:04d}", chat="5511999999999@s.whatsapp.net",
        from_="5511999999999@s.whatsapp.net", from_me=False, type=MessageKind.TEXT,
        text=f"hello {number}", timestamp="2026-11-25T12:00:00Z",
    )  # fmt: skip
    event = make_event(INSTANCE, message, source_id=f"m{number}")
    ack = await connector.jetstream().publish(
        f"wa.evt.{INSTANCE}.message.received", encode(event), headers={"Nats-Msg-Id": event.id}
    )
    assert ack.stream == "WA_EVENTS"
    return event.id


async def stored_subjects(connector: NATS, stream: str, subjects: str) -> dict[str, int]:
    """How many messages `stream` holds per subject matching `subjects`, as the connector user
    sees it (`$JS.API.STREAM.INFO`, which it may use: it creates the streams at start)."""
    info = await connector.jetstream().stream_info(stream, subjects_filter=subjects)
    return dict(info.state.subjects or {})


def relay_violations(node: Node) -> list[str]:
    """The permission violations nats-server logged for the relay user."""
    lines = node.log.read_text().splitlines() if node.log.exists() else []
    return [line for line in lines if '"WABUS/user:relay"' in line and "Violation" in line]


async def test_a_410_disables_the_endpoint_and_its_notice_is_stored_on_the_relay_user(
    node: Node, tmp_path: Path
) -> None:
    await eventually(lambda: jetstream_ready(node.url("connector")), timeout=15)
    gone = False
    answered: list[tuple[str, int]] = []
    receiver = Receiver(new_secret(), respond=lambda e: _answer(answered, e, 410 if gone else 200))
    live: list[Msg] = []

    async def on_notice(message: Msg) -> None:
        live.append(message)

    async with (
        client(node.url("connector")) as (connector, _),
        client(node.url("reader")) as (reader, _),
        client(node.url("relay")) as (relay_user, _),
        relay_on_its_user(node, receiver, tmp_path) as relay,
    ):
        # the relay announced itself, and its user counts relays the way it does (the shares of
        # endpoints among relays: `relay.delivery.presence`)
        presence = RelayPresence(relay_user.jetstream(), "wa_webhook_leases", "another-relay")

        async def one_relay_counted() -> bool:
            return await presence.count() == 1

        await eventually(one_relay_counted, timeout=20)
        await reader.subscribe(NOTICES, cb=on_notice)
        await reader.flush()

        # delivering normally: the first event arrives, and no notice exists (positive control)
        first = await publish_message(connector, 1)
        await receiver.wait_for(lambda e: e["id"] == first, timeout=20)
        assert (await relay.api.endpoints())[0]["disabled"] is False
        assert await stored_subjects(connector, "WA_EVENTS", NOTICES) == {}
        assert live == []

        # the endpoint is gone: the next event's 410 disables it and publishes the notice
        gone = True
        second = await publish_message(connector, 2)
        await eventually(lambda: _answered(answered, second, 410), timeout=20)
        [endpoint] = await eventually(lambda: _disabled(relay.api), timeout=20)
        assert endpoint["endpoint"] == "global"
        assert endpoint["disabled_reason"] == "HTTP 410 Gone"
        stored = await eventually(
            lambda: stored_subjects(connector, "WA_EVENTS", NOTICES), timeout=20
        )
        assert stored == {NOTICE_SUBJECT: 1}, "the relay user stored the notice in WA_EVENTS"
        await eventually(lambda: _any(live), timeout=10)
        [notice] = live
        assert notice.subject == NOTICE_SUBJECT
        envelope = json.loads(notice.data)
        assert envelope["type"] == "webhook.endpoint_disabled"
        assert envelope["instance"] == INSTANCE
        assert envelope["data"]["endpoint_id"] == "global"
        assert envelope["data"]["status"] == 410
        assert envelope["data"]["url"] == relay.settings.webhook_url

        # enabled again (the relay user deletes the state): the held-back event arrives, and so
        # does the notice (the global endpoint receives every event)
        gone = False
        assert (await relay.api.enable_endpoint("global"))["disabled"] is False
        await eventually(lambda: _answered(answered, second, 200), timeout=20)
        await eventually(lambda: _answered(answered, envelope["id"], 200), timeout=20)
        assert answered[:2] == [(first, 200), (second, 410)]
        assert sorted(answered[2:]) == sorted([(second, 200), (envelope["id"], 200)])
        # that notice was read back from WA_EVENTS by the endpoint's consumer
        [delivered] = receiver.events("webhook.endpoint_disabled")
        assert delivered == envelope
        assert receiver.rejected == []
    assert relay_violations(node) == []


async def test_dead_letters_recovery_and_replies_work_on_the_relay_user(
    node: Node, tmp_path: Path
) -> None:
    await eventually(lambda: jetstream_ready(node.url("connector")), timeout=15)
    broken = True
    answered: list[tuple[str, int]] = []
    receiver = Receiver(
        new_secret(),
        respond=lambda e: _answer(answered, e, 500 if broken else 200),
        answer=lambda event: {} if broken else {"reply": {"text": "echo"}},
    )
    since = datetime.now(UTC) - timedelta(seconds=1)
    async with (
        client(node.url("connector")) as (connector, _),
        relay_on_its_user(node, receiver, tmp_path) as relay,
    ):
        assert await stored_subjects(connector, "WA_DLQ", "wa.dlq.>") == {}
        event_id = await publish_message(connector, 1)
        dead = await eventually(lambda: stored_subjects(connector, "WA_DLQ", "wa.dlq.>"))
        assert dead == {f"wa.dlq.{INSTANCE}._global.message.received": 1}
        assert await stored_subjects(connector, "WA_COMMANDS", "wa.cmd.>") == {}

        # recovery reads WA_DLQ through a consumer of the relay user; the 2xx answer's reply
        # becomes a send command the relay user publishes
        broken = False
        assert await relay.api.recover("global", since.isoformat()) == {
            "endpoint": "global",
            "events": 1,
        }
        await eventually(lambda: _answered(answered, event_id, 200), timeout=20)
        assert answered == [(event_id, 500), (event_id, 500), (event_id, 200)]
        commands = await eventually(
            lambda: stored_subjects(connector, "WA_COMMANDS", "wa.cmd.>"), timeout=20
        )
        assert commands == {f"wa.cmd.{INSTANCE}.send": 1}
        assert receiver.rejected == []
    assert relay_violations(node) == []


def _answer(answered: list[tuple[str, int]], event: dict[str, Any], status: int) -> int:
    answered.append((event["id"], status))
    return status


async def _answered(answered: list[tuple[str, int]], event_id: str, status: int) -> bool:
    return (event_id, status) in answered


async def _any(items: list[Any]) -> bool:
    return bool(items)


async def _disabled(api: RelayClient) -> list[dict[str, Any]]:
    endpoints = await api.endpoints()
    return endpoints if endpoints[0]["disabled"] else []
