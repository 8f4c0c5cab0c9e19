"""Helpers for connector tests: instances written to the config bucket as the relay would, the
status bucket, stored events and commands."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

from nats.aio.client import Client as NATS
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, NotFoundError

from connector.service import run_connector
from schemas.envelope import Envelope, encode, utc_now
from schemas.instances import CallPolicy, InstanceConfig, InstanceStatus
from schemas.subjects import Topology
from tests.support import eventually, stored_envelopes
from wabus.buckets import open_instance_buckets
from wabus.settings import Settings


async def create_instance(
    nc: NATS,
    topology: Topology,
    instance: str,
    desired_state: Literal["running", "stopped"] = "running",
    calls: CallPolicy | None = None,
) -> None:
    kv = (await open_instance_buckets(nc.jetstream(), topology)).config
    now = utc_now()
    config = InstanceConfig(
        id=instance,
        desired_state=desired_state,
        calls=calls or CallPolicy(),
        created_at=now,
        updated_at=now,
    )
    await kv.put(instance, config.model_dump_json().encode())


async def delete_instance(nc: NATS, topology: Topology, instance: str) -> None:
    kv = await nc.jetstream().key_value(topology.config_bucket)
    await kv.delete(instance)


async def status_of(nc: NATS, topology: Topology, instance: str) -> InstanceStatus | None:
    try:
        kv = await nc.jetstream().key_value(topology.status_bucket)
        entry = await kv.get(instance)
    except (BucketNotFoundError, NotFoundError, KeyNotFoundError):
        return None
    return InstanceStatus.model_validate_json(entry.value) if entry.value else None


async def state_is(nc: NATS, topology: Topology, instance: str, state: str) -> Any:
    status = await status_of(nc, topology, instance)
    return status if status is not None and status.state.value == state else None


async def events_of(nc: NATS, topology: Topology, event_type: str) -> list[dict[str, Any]]:
    try:
        envelopes = await stored_envelopes(nc.jetstream(), topology.events_stream)
    except NotFoundError:
        return []
    return [e for e in envelopes if e["type"] == event_type]


async def publish_command(
    nc: NATS,
    topology: Topology,
    instance: str,
    command_id: str,
    data: dict[str, Any],
    command: str = "send",
) -> None:
    envelope = Envelope[dict[str, Any]](
        id=command_id, type=command, instance=instance, timestamp=utc_now(), data=data
    )
    await nc.jetstream().publish(
        topology.command(instance, command), encode(envelope), headers={"Nats-Msg-Id": command_id}
    )


async def sim(nc: NATS, topology: Topology, instance: str, action: str, payload: Any = None) -> Any:
    body = json.dumps(payload if payload is not None else {}).encode()
    answer = await nc.request(topology.sim(instance, action), body, timeout=5)
    return json.loads(answer.data)


@asynccontextmanager
async def connector_running(settings: Settings, nc: NATS) -> AsyncIterator[Settings]:
    """The connector in this process until the block ends."""
    stop = asyncio.Event()
    task = asyncio.create_task(run_connector(settings, stop))

    async def consuming() -> bool:
        if task.done():
            task.result()
        try:
            await nc.jetstream().consumer_info(settings.topology.commands_stream, "connector")
        except Exception:
            return False
        return True

    await eventually(consuming)
    try:
        yield settings
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
