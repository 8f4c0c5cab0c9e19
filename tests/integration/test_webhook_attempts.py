"""What the dispatcher does with what JetStream hands it: poison messages on the events stream are
dead-lettered at first sight without stalling the endpoint or resending anything, and attempt
numbers count HTTP requests really made, not redeliveries (a lease handed back, a 410 re-queue)."""

from __future__ import annotations

from collections import Counter
from ipaddress import ip_network
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from pydantic import SecretStr

from relay.client import RelayClient
from schemas.envelope import encode, make_event
from tests.integration.test_webhook_delivery import (
    inbound,
    publish,
    receiving,
    unique_ids,
)
from tests.support import Receiver, eventually
from wabus.settings import Settings


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The receivers here listen on loopback, which the SSRF guard refuses unless allowed."""
    return settings.model_copy(update={"webhook_allow_cidrs": (ip_network("127.0.0.0/8"),)})


async def dead_letters(nc: NATS, settings: Settings) -> list[tuple[dict[str, str], bytes]]:
    js = nc.jetstream()
    info = await js.stream_info(settings.topology.dlq_stream)
    found: list[tuple[dict[str, str], bytes]] = []
    if not info.state.messages:
        return found
    for sequence in range(info.state.first_seq, info.state.last_seq + 1):
        message = await js.get_msg(settings.topology.dlq_stream, sequence)
        found.append((dict(message.headers or {}), message.data or b""))
    return found


async def at_least(count: int, nc: NATS, settings: Settings) -> list[Any]:
    found = await dead_letters(nc, settings)
    return found if len(found) >= count else []


async def test_poison_messages_are_dead_lettered_at_first_sight_and_stall_nothing(
    settings: Settings, nc: NATS, webhook_secret: str
) -> None:
    receiver = Receiver(webhook_secret)
    async with receiving(receiver, settings, nc) as (s, _):
        js = nc.jetstream()
        before = [await publish(nc, s, n) for n in range(5)]
        other = make_event("other", inbound(99))
        poison = {
            s.topology.event("acme", "message.received"): b"\x00not json at all",
            s.topology.event("acme", "presence.chat"): b'{"hello": "world"}',
            s.topology.event("acme", "message.sent"): encode(other),  # another instance's
        }
        for subject, body in poison.items():
            await js.publish(subject, body)
        after = [await publish(nc, s, n) for n in range(5, 10)]
        await eventually(lambda: _received(receiver, before + after))
        buried = await eventually(lambda: at_least(3, nc, s))
        last = await publish(nc, s, 10)  # progress after the poison: the endpoint is not stalled
        await eventually(lambda: _received(receiver, [last]))
        buried = await dead_letters(nc, s)

    assert unique_ids(receiver) == Counter({event_id: 1 for event_id in [*before, *after, last]})
    reasons = sorted(headers["Wabus-Reason"] for headers, _ in buried)
    assert len(reasons) == 3, reasons  # each poison message once, not fetched again
    assert all(reason.startswith("poison: ") for reason in reasons)
    assert any("not an envelope" in reason and "JSON" in reason for reason in reasons)
    assert any("not an envelope" in reason and "id" in reason for reason in reasons)
    assert any("envelope of 'other'" in reason for reason in reasons)
    assert sorted(body for _, body in buried) == sorted(poison.values())


async def _received(receiver: Receiver, ids: list[str]) -> bool:
    return set(ids) <= set(unique_ids(receiver))


async def test_attempts_count_requests_not_redeliveries(
    settings: Settings, nc: NATS, webhook_secret: str, database_url: str
) -> None:
    """The first request ever is answered 410: the endpoint is disabled and the events queued
    behind it in the chat's lane are handed back without a request. After the endpoint is
    enabled, every event gets exactly the schedule's three requests before its dead letter, and
    the log numbers them 1, 2, 3."""
    requests: Counter[str] = Counter()

    def gone_then_broken(event: dict[str, Any]) -> int:
        if event["type"] != "message.received":
            return 204  # the `webhook.endpoint_disabled` notice
        requests[event["id"]] += 1
        return 410 if requests.total() == 1 else 500

    receiver = Receiver(webhook_secret, respond=gone_then_broken)
    schedule = (0.0, 0.1, 0.1)
    async with receiving(
        receiver,
        settings,
        nc,
        webhook_retry_schedule=schedule,
        database_url=SecretStr(database_url),
    ) as (s, client):
        ids = [await publish(nc, s, n) for n in range(5)]
        await eventually(lambda: _disabled(client))
        await client.enable_endpoint("global")
        await eventually(lambda: at_least(5, nc, s), timeout=20)
        numbers = {event_id: await _attempt_numbers(client, event_id) for event_id in ids}

    assert requests == Counter({event_id: len(schedule) for event_id in ids})
    assert all(found == [1, 2, 3] for found in numbers.values()), numbers


async def _disabled(client: RelayClient) -> bool:
    [endpoint] = await client.endpoints()
    return bool(endpoint["disabled"])


async def _attempt_numbers(client: RelayClient, event_id: str) -> list[int]:
    async def logged() -> list[int]:
        page = await client.deliveries(event_id=event_id)
        numbers = sorted(row["attempt"] for row in page["deliveries"])
        return numbers if len(numbers) >= 3 else []

    return list(await eventually(logged))
