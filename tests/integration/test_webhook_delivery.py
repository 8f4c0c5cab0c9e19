"""Webhook delivery against a real nats-server and real local receivers: failures and retries,
410, Retry-After, timeouts, an endpoint that is down for a while, dead letters and recovery,
several relay replicas, per-chat order, webhook replies, SSRF refusals, per-instance endpoints."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from ipaddress import ip_network
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from pydantic import SecretStr
from standardwebhooks import Webhook

from relay.app import create_app
from relay.client import RelayClient
from relay.webhooks.signature import new_secret
from schemas.envelope import encode, make_event
from schemas.events import MessageReceived, PresenceChat
from tests.conftest import API_KEY_ID, API_SECRET
from tests.support import Receiver, eventually, running, stored_envelopes
from wabus.embedded import free_port
from wabus.natsbus import ensure_streams
from wabus.settings import Settings

CHAT = "5511999999999@s.whatsapp.net"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The receivers here listen on loopback, which the SSRF guard refuses unless allowed."""
    return settings.model_copy(update={"webhook_allow_cidrs": (ip_network("127.0.0.0/8"),)})


def inbound(number: int, chat: str = CHAT, text: str | None = None) -> MessageReceived:
    return MessageReceived.model_validate(
        {
            "message_id": f"M{number}",
            "chat": chat,
            "from": chat,
            "from_me": False,
            "type": "text",
            "text": text if text is not None else f"hello {number}",
            "timestamp": datetime.now(UTC),
        }
    )


async def publish(
    nc: NATS, settings: Settings, number: int, *, chat: str = CHAT, instance: str = "acme"
) -> str:
    envelope = make_event(
        instance, inbound(number, chat, f"{chat}#{number}"), source_id=f"{chat}-{number}"
    )
    await nc.jetstream().publish(
        settings.topology.event(instance, envelope.type),
        encode(envelope),
        headers={"Nats-Msg-Id": envelope.id},
    )
    return envelope.id


@contextlib.asynccontextmanager
async def relay(settings: Settings) -> AsyncIterator[RelayClient]:
    async with running(create_app(settings)) as url, RelayClient(url, API_KEY_ID, API_SECRET) as c:
        yield c


@contextlib.asynccontextmanager
async def receiving(
    receiver: Receiver, settings: Settings, nc: NATS, **changes: Any
) -> AsyncIterator[tuple[Settings, RelayClient]]:
    """`receiver` on a real port and one relay delivering to it."""
    async with running(receiver.app()) as receiver_url:
        relay_settings = settings.model_copy(
            update={"webhook_url": receiver_url + "/hook", **changes}
        )
        await ensure_streams(nc.jetstream(), relay_settings)
        async with relay(relay_settings) as client:
            yield relay_settings, client


def unique_ids(receiver: Receiver) -> Counter[str]:
    return Counter(headers["webhook-id"] for headers, _ in receiver.deliveries)


async def received(receiver: Receiver, count: int) -> bool:
    return len(unique_ids(receiver)) >= count


async def test_a_receiver_failing_n_times_then_succeeding_gets_each_event_once_delivered(
    settings: Settings, nc: NATS, webhook_secret: str
) -> None:
    attempts: Counter[str] = Counter()

    def fail_three_times(event: dict[str, Any]) -> int:
        attempts[event["id"]] += 1
        return 500 if attempts[event["id"]] <= 3 else 204

    receiver = Receiver(webhook_secret, respond=fail_three_times)
    schedule = (0.0, 0.1, 0.1, 0.1, 0.1)
    async with receiving(receiver, settings, nc, webhook_retry_schedule=schedule) as (s, _):
        ids = [await publish(nc, s, n) for n in range(10)]
        await eventually(lambda: _all_attempted(attempts, ids, 4))
        await asyncio.sleep(0.5)
    assert attempts == Counter({event_id: 4 for event_id in ids})
    assert await stored_envelopes(nc.jetstream(), s.topology.dlq_stream) == []


async def _all_attempted(attempts: Counter[str], ids: list[str], times: int) -> bool:
    return all(attempts[event_id] >= times for event_id in ids)


async def test_the_receiver_answers_204_and_304_whole_and_keeps_the_connection(
    webhook_secret: str,
) -> None:
    """The test receiver itself: the relay reuses kept-alive connections, so an answer the
    receiver breaks (a body after a 204, and uvicorn closes the connection) fails the next
    delivery with EOF, a failed attempt no receiver ever saw."""
    signer = Webhook(webhook_secret)
    receiver = Receiver(webhook_secret, respond=lambda event: int(event["status"]))
    async with running(receiver.app()) as url:
        reader, writer = await asyncio.open_connection("127.0.0.1", int(url.rpartition(":")[2]))
        heads = []
        try:
            for number, status in enumerate((204, 304, 204)):  # all on one connection
                body = json.dumps({"type": "test", "status": status})
                now = datetime.now(UTC)
                writer.write(
                    b"POST /hook HTTP/1.1\r\nHost: receiver\r\n"
                    + f"Content-Length: {len(body)}\r\nwebhook-id: msg_{number}\r\n".encode()
                    + f"webhook-timestamp: {int(now.timestamp())}\r\n".encode()
                    + f"webhook-signature: {signer.sign(f'msg_{number}', now, body)}\r\n".encode()
                    + b"\r\n"
                    + body.encode()
                )
                heads.append(await reader.readuntil(b"\r\n\r\n"))  # EOF raises
        finally:
            writer.close()
            await writer.wait_closed()
    # a body after an answer would be read as the start of the next one
    assert [head.split(b"\r\n")[0] for head in heads] == [
        b"HTTP/1.1 204 No Content",
        b"HTTP/1.1 304 Not Modified",
        b"HTTP/1.1 204 No Content",
    ]
    assert receiver.rejected == []
    assert [event["status"] for event in receiver.events()] == [204, 304, 204]


async def test_410_disables_the_endpoint_until_it_is_enabled_again(
    settings: Settings, nc: NATS, webhook_secret: str
) -> None:
    gone = True
    receiver = Receiver(webhook_secret, respond=lambda event: 410 if gone else 200)
    async with receiving(receiver, settings, nc) as (s, client):
        first = await publish(nc, s, 1)
        await eventually(lambda: _disabled(client))
        notices = await eventually(lambda: _events_of(nc, s, "webhook.endpoint_disabled"))
        assert notices[0]["data"]["endpoint_id"] == "global"
        assert notices[0]["data"]["status"] == 410
        second = await publish(nc, s, 2)
        await asyncio.sleep(1.0)
        assert list(unique_ids(receiver)) == [first]  # nothing more while disabled
        gone = False
        enabled = await client.enable_endpoint("global")
        assert enabled["disabled"] is False
        await eventually(
            lambda: _delivered_ok(receiver, {first, second}), timeout=15
        )  # held back, not lost


async def _disabled(client: RelayClient) -> bool:
    [endpoint] = await client.endpoints()
    return bool(endpoint["disabled"]) and endpoint["disabled_reason"] == "HTTP 410 Gone"


async def _events_of(nc: NATS, settings: Settings, event_type: str) -> list[dict[str, Any]]:
    stored = await stored_envelopes(nc.jetstream(), settings.topology.events_stream)
    return [event for event in stored if event["type"] == event_type]


async def _delivered_ok(receiver: Receiver, ids: set[str]) -> bool:
    return ids <= set(unique_ids(receiver))


async def test_429_with_retry_after_waits_as_asked(
    settings: Settings, nc: NATS, webhook_secret: str, database_url: str
) -> None:
    calls: list[str] = []

    def busy_once(event: dict[str, Any]) -> int:
        calls.append(event["id"])
        return 429 if len(calls) == 1 else 200

    receiver = Receiver(
        webhook_secret,
        respond=busy_once,
        headers=lambda event: {"Retry-After": "2"} if len(calls) == 1 else {},
    )
    logged = {"database_url": SecretStr(database_url)}
    async with receiving(receiver, settings, nc, **logged) as (s, client):
        event_id = await publish(nc, s, 1)
        await eventually(lambda: received_twice(calls), timeout=10)
        rows = await eventually(lambda: _logged_attempts(client, event_id, 2))
    first, second = sorted(rows, key=lambda row: row["attempt"])
    assert (first["outcome"], first["status_code"], second["outcome"]) == (
        "retrying",
        429,
        "delivered",
    )
    wait = datetime.fromisoformat(first["next_attempt_at"]) - datetime.fromisoformat(first["at"])
    assert wait == timedelta(seconds=2)  # as asked, where the schedule alone says 0.2 s ±20 %


async def _logged_attempts(client: RelayClient, event_id: str, count: int) -> list[Any]:
    rows: list[Any] = (await client.deliveries(event_id=event_id))["deliveries"]
    return rows if len(rows) >= count else []


async def received_twice(calls: list[str]) -> bool:
    return len(calls) >= 2


async def test_a_receiver_hanging_past_the_timeout_is_retried(
    settings: Settings, nc: NATS, webhook_secret: str
) -> None:
    hang = asyncio.Event()  # the first request is answered only when the test says so
    answered_before_the_retry: list[int] = []

    def hang_first(event: dict[str, Any]) -> asyncio.Event | None:
        if len(receiver.deliveries) == 1:
            return hang
        answered_before_the_retry.append(len(receiver.answered))
        return None

    receiver = Receiver(webhook_secret, hold=hang_first)
    try:
        async with receiving(receiver, settings, nc, webhook_timeout=0.5) as (s, _):
            event_id = await publish(nc, s, 1)
            await eventually(lambda: received_twice_ids(receiver, event_id), timeout=10)
            hang.set()
    finally:
        hang.set()
    assert answered_before_the_retry == [0]  # retried after the timeout, not after the hang


async def received_twice_ids(receiver: Receiver, event_id: str) -> bool:
    return unique_ids(receiver)[event_id] >= 2


async def test_a_receiver_down_for_a_while_gets_every_event_once_it_is_back(
    settings: Settings, nc: NATS, webhook_secret: str
) -> None:
    receiver = Receiver(webhook_secret)
    port = free_port()
    schedule = (0.0, 0.5, 0.5, 1.0, 1.0, 2.0, 2.0, 2.0)
    relay_settings = settings.model_copy(
        update={"webhook_url": f"http://127.0.0.1:{port}/hook", "webhook_retry_schedule": schedule}
    )
    await ensure_streams(nc.jetstream(), relay_settings)
    async with relay(relay_settings):
        ids = [
            await publish(nc, relay_settings, n, chat=f"{n % 7}@s.whatsapp.net") for n in range(200)
        ]
        await asyncio.sleep(1.5)  # the receiver is down: every attempt so far failed
        async with running(receiver.app(), port):
            await eventually(lambda: received(receiver, 200), timeout=20)
            await asyncio.sleep(0.5)
    assert set(unique_ids(receiver)) == set(ids)
    assert receiver.rejected == []
    assert await stored_envelopes(nc.jetstream(), relay_settings.topology.dlq_stream) == []


async def test_exhausted_events_go_to_the_dead_letter_stream_and_are_recovered_from_there(
    settings: Settings, nc: NATS, webhook_secret: str
) -> None:
    broken = True
    receiver = Receiver(webhook_secret, respond=lambda event: 500 if broken else 200)
    since = datetime.now(UTC) - timedelta(seconds=1)
    async with receiving(receiver, settings, nc) as (s, client):
        ids = [await publish(nc, s, n) for n in range(3)]
        dead = await eventually(lambda: _dead_count(nc, s, 3))
        assert {envelope["id"] for envelope in dead} == set(ids)
        attempts = unique_ids(receiver)
        assert all(attempts[event_id] == len(s.webhook_retry_schedule) for event_id in ids)
        broken = False
        before = len(receiver.deliveries)
        started = await client.recover("global", since.isoformat())
        assert started == {"endpoint": "global", "events": 3}
        await eventually(lambda: _count_at_least(receiver, before + 3))
        recovered = [headers["webhook-id"] for headers, _ in receiver.deliveries[before:]]
        assert sorted(recovered) == sorted(ids)
        # a range that ends before the dead letters holds none
        earlier = since - timedelta(minutes=1)
        nothing = await client.recover("global", earlier.isoformat(), since.isoformat())
        assert nothing["events"] == 0


async def _dead_count(nc: NATS, settings: Settings, count: int) -> list[dict[str, Any]]:
    dead = await stored_envelopes(nc.jetstream(), settings.topology.dlq_stream)
    return dead if len(dead) >= count else []


async def _count_at_least(receiver: Receiver, count: int) -> bool:
    return len(receiver.deliveries) >= count


async def test_two_replicas_share_the_endpoint_without_double_delivery_and_keep_chat_order(
    settings: Settings, nc: NATS, webhook_secret: str
) -> None:
    receiver = Receiver(webhook_secret)
    chats, per_chat = 50, 100
    async with running(receiver.app()) as receiver_url:
        relay_settings = settings.model_copy(update={"webhook_url": receiver_url + "/hook"})
        await ensure_streams(nc.jetstream(), relay_settings)
        async with relay(relay_settings), relay(relay_settings):
            js = nc.jetstream()
            for n in range(per_chat):
                acks = [
                    js.publish(
                        relay_settings.topology.event("acme", "message.received"),
                        encode(e := make_event("acme", inbound(n, chat, f"{chat}#{n}"))),
                        headers={"Nats-Msg-Id": e.id},
                    )
                    for chat in (f"{c}@s.whatsapp.net" for c in range(chats))
                ]
                await asyncio.gather(*acks)
            await eventually(lambda: received(receiver, chats * per_chat), timeout=60)
            await asyncio.sleep(0.5)
    assert max(unique_ids(receiver).values()) == 1, "an event was delivered twice"
    order: dict[str, list[int]] = defaultdict(list)
    for event in receiver.events("message.received"):
        chat, number = event["data"]["text"].split("#")
        order[chat].append(int(number))
    assert len(order) == chats
    assert all(numbers == list(range(per_chat)) for numbers in order.values())


async def test_a_reply_delivered_twice_makes_one_send(
    settings: Settings, nc: NATS, webhook_secret: str
) -> None:
    """The global endpoint and a per-instance endpoint both answer the same event with a reply."""
    receiver = Receiver(
        webhook_secret, answer=lambda event: {"reply": {"text": "pong " + event["data"]["text"]}}
    )
    async with receiving(receiver, settings, nc) as (s, client):
        hook_url = (await client.endpoints())[0]["url"]
        await client.create_instance(
            "acme", webhooks=[{"id": "bot", "url": hook_url, "secret": webhook_secret}]
        )
        await eventually(lambda: _has_endpoint(client, "acme/bot"))
        event_id = await publish(nc, s, 5)
        await eventually(lambda: _count_at_least(receiver, 2))
        await eventually(lambda: stored_envelopes(nc.jetstream(), s.topology.commands_stream))
        await asyncio.sleep(0.5)
        commands = await stored_envelopes(nc.jetstream(), s.topology.commands_stream)
    assert unique_ids(receiver)[event_id] == 2
    assert [command["id"] for command in commands] == [f"reply-{event_id}"]
    assert commands[0]["data"]["to"] == CHAT


async def _has_endpoint(client: RelayClient, key: str) -> bool:
    return any(endpoint["endpoint"] == key for endpoint in await client.endpoints())


async def test_targets_on_private_addresses_are_refused_without_an_allow_list(
    settings: Settings, nc: NATS, webhook_secret: str
) -> None:
    receiver = Receiver(webhook_secret)
    async with running(receiver.app()) as receiver_url:
        port = receiver_url.rsplit(":", 1)[1]
        for number, url in enumerate((receiver_url + "/hook", f"http://localhost:{port}/hook")):
            relay_settings = settings.model_copy(
                update={
                    "webhook_url": url,
                    "webhook_allow_cidrs": (),
                    "webhook_retry_schedule": (0.0,),
                }
            )
            await ensure_streams(nc.jetstream(), relay_settings)
            async with relay(relay_settings):
                await publish(nc, relay_settings, number)
                await eventually(
                    lambda s=relay_settings, n=number: _dead_count(nc, s, n + 1)  # type: ignore[misc]
                )
            dlq = relay_settings.topology.dlq_stream
            last = await nc.jetstream().get_msg(dlq, number + 1)
            assert last.headers is not None
            assert "refused" in last.headers["Wabus-Reason"]
            assert "not a global address" in last.headers["Wabus-Reason"]
    assert receiver.deliveries == [], "a refused target was reached"


async def test_one_hanging_endpoint_does_not_delay_the_others(
    settings: Settings, nc: NATS, webhook_secret: str
) -> None:
    hang = asyncio.Event()  # the slow endpoint answers nothing until the test says so
    fast = Receiver(webhook_secret)
    slow = Receiver(webhook_secret, hold=lambda event: hang)
    try:
        async with (
            running(slow.app()) as slow_url,
            receiving(fast, settings, nc, webhook_timeout=30.0) as (s, client),
        ):
            await client.create_instance(
                "acme",
                webhooks=[{"id": "slow", "url": slow_url + "/hook", "secret": webhook_secret}],
            )
            await eventually(lambda: _has_endpoint(client, "acme/slow"))
            for n in range(50):
                await publish(nc, s, n, chat=f"{n}@s.whatsapp.net")
            await eventually(lambda: received(slow, 1), timeout=10)  # the slow one is busy
            await eventually(lambda: received(fast, 50), timeout=20)
            slow_answers_meanwhile = list(slow.answered)
            hang.set()
    finally:
        hang.set()
    assert slow_answers_meanwhile == []  # every fast delivery happened while the slow one hung


async def test_per_instance_endpoints_filter_events_and_sign_with_their_own_secret(
    settings: Settings, nc: NATS, webhook_secret: str
) -> None:
    own_secret = new_secret()
    own = Receiver(own_secret)
    everything = Receiver(webhook_secret)
    async with running(own.app()) as own_url, receiving(everything, settings, nc) as (s, client):
        await client.create_instance(
            "acme",
            webhooks=[
                {
                    "id": "crm",
                    "url": own_url + "/hook",
                    "secret": own_secret,
                    "events": ["presence.*"],
                }
            ],
        )
        await eventually(lambda: _has_endpoint(client, "acme/crm"))
        await publish(nc, s, 1)  # message.received: not for `crm`
        presence = make_event(
            "acme",
            PresenceChat.model_validate({"chat": CHAT, "from": CHAT, "state": "composing"}),
        )
        await nc.jetstream().publish(
            s.topology.event("acme", presence.type),
            encode(presence),
            headers={"Nats-Msg-Id": presence.id},
        )
        await eventually(lambda: received(own, 1))
        await eventually(lambda: received(everything, 2))
        await asyncio.sleep(0.3)
    assert [event["type"] for event in own.events()] == ["presence.chat"]
    assert own.rejected == []
    assert json.dumps(sorted(e["type"] for e in everything.events())) == json.dumps(
        ["message.received", "presence.chat"]
    )
