"""`wabus dev` creates the `default` instance once, as the relay would, and never overwrites it."""

from __future__ import annotations

from nats.aio.client import Client as NATS

from connector.service import ensure_dev_instance
from schemas.instances import InstanceConfig
from tests import connector_support as cs
from wabus.settings import Settings


async def test_the_dev_instance_is_created_once(settings: Settings, nc: NATS) -> None:
    await ensure_dev_instance(settings, "default")
    kv = await nc.jetstream().key_value(settings.topology.config_bucket)
    first = await kv.get("default")
    assert first.value is not None
    assert InstanceConfig.model_validate_json(first.value).desired_state == "running"
    await cs.create_instance(nc, settings.topology, "default", desired_state="stopped")
    await ensure_dev_instance(settings, "default")  # a second start keeps what is there
    kept = await kv.get("default")
    assert kept.value is not None
    assert InstanceConfig.model_validate_json(kept.value).desired_state == "stopped"
