"""The deliveries API of a relay that keeps its delivery log on a real Postgres (a throwaway
database per test); the log itself is tested in `test_delivery_log.py`."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from ipaddress import ip_network

import pytest
from nats.aio.client import Client as NATS
from pydantic import SecretStr

from relay.client import RelayClient, RelayError
from tests.integration.test_webhook_delivery import publish, receiving
from tests.support import Receiver, eventually
from wabus.settings import Settings


@pytest.fixture
def settings(settings: Settings, database_url: str) -> Settings:
    """A relay keeping its log in this test's own database; receivers on loopback."""
    return settings.model_copy(
        update={
            "database_url": SecretStr(database_url),
            "webhook_allow_cidrs": (ip_network("127.0.0.0/8"),),
        }
    )


async def test_a_relay_logs_every_attempt_and_retries_one_event_on_request(
    settings: Settings, nc: NATS, webhook_secret: str
) -> None:
    calls: Counter[str] = Counter()

    def fail_first(event: dict[str, object]) -> int:
        calls[str(event["id"])] += 1
        return 503 if calls[str(event["id"])] == 1 else 200

    receiver = Receiver(webhook_secret, respond=fail_first)
    async with receiving(receiver, settings, nc) as (s, client):
        event_id = await publish(nc, s, 1)
        await eventually(lambda: _outcomes(client, event_id, ["delivered", "retrying"]))
        [newest, oldest] = (await client.deliveries(event_id=event_id))["deliveries"]
        assert (oldest["attempt"], oldest["status_code"], oldest["outcome"]) == (1, 503, "retrying")
        assert oldest["next_attempt_at"] is not None
        assert (newest["attempt"], newest["status_code"], newest["trigger"]) == (
            2,
            200,
            "schedule",
        )
        assert newest["latency_ms"] > 0
        retried = await client.retry_delivery(event_id, "global")
        assert retried == {"delivered": True, "attempt": 3, "outcome": "delivered"}
        assert calls[event_id] == 3
        with pytest.raises(RelayError) as unknown:
            await client.retry_delivery("evt_nope", "global")
        assert unknown.value.status == 404


async def _outcomes(client: RelayClient, event_id: str, expected: list[str]) -> bool:
    rows = (await client.deliveries(event_id=event_id))["deliveries"]
    return [row["outcome"] for row in rows] == expected


async def test_recovery_skips_dead_letters_delivered_since(
    settings: Settings, nc: NATS, webhook_secret: str
) -> None:
    broken = True
    receiver = Receiver(webhook_secret, respond=lambda event: 500 if broken else 200)
    since = datetime.now(UTC) - timedelta(seconds=1)
    async with receiving(receiver, settings, nc, webhook_retry_schedule=(0.0,)) as (s, client):
        first, second = await publish(nc, s, 1), await publish(nc, s, 2)
        await eventually(lambda: _dead(client, 2))
        broken = False
        assert (await client.retry_delivery(first, "global"))["delivered"] is True
        assert await client.recover("global", since.isoformat()) == {
            "endpoint": "global",
            "events": 1,
        }
        await eventually(lambda: _outcomes(client, second, ["delivered", "dead"]))
        outcomes = await client.deliveries(event_id=second)
        assert outcomes["deliveries"][0]["trigger"] == "recover"


async def _dead(client: RelayClient, count: int) -> bool:
    return len((await client.deliveries(outcome="dead"))["deliveries"]) >= count
