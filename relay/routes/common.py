"""Reading the instance buckets for the routes: configuration and status, or a clear 404."""

from __future__ import annotations

from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from relay.problems import Problem
from relay.state import RelayState
from schemas.instances import InstanceConfig, InstanceStatus


async def get_entry(kv: KeyValue, key: str) -> tuple[bytes, int] | None:
    """The value and revision of `key`, or None when it is absent or deleted."""
    try:
        entry = await kv.get(key)
    except KeyNotFoundError:  # also raised for a deleted key
        return None
    if not entry.value:
        return None
    return entry.value, entry.revision or 0


async def load_config(state: RelayState, instance: str) -> tuple[InstanceConfig, int]:
    """The instance's configuration and revision; 404 `unknown_instance` when there is none."""
    found = await get_entry(state.config, instance)
    if found is None:
        raise Problem(404, "unknown_instance", f"no instance {instance!r}")
    return InstanceConfig.model_validate_json(found[0]), found[1]


async def load_status(state: RelayState, instance: str) -> InstanceStatus | None:
    """What the connector last reported, or None when it has not reported yet."""
    found = await get_entry(state.status, instance)
    return InstanceStatus.model_validate_json(found[0]) if found else None
