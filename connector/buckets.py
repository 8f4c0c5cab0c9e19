"""The connector's buckets: the shared ones, plus the leases bucket when leases are on."""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.errors import KeyWrongLastSequenceError

from schemas.envelope import utc_now
from schemas.instances import InstanceConfig
from schemas.subjects import Topology
from wabus.buckets import open_bucket, open_instance_buckets


async def ensure_buckets(
    js: JetStreamContext, topology: Topology, lease_ttl: float | None = None, replicas: int = 1
) -> None:
    """`lease_ttl`: also the leases bucket, whose TTL is the lease time (see `leases.py`)."""
    await open_instance_buckets(js, topology, replicas=replicas)
    if lease_ttl is not None:
        await open_bucket(
            js, topology.leases_bucket, "Connector leases", ttl=lease_ttl, replicas=replicas
        )


async def ensure_instance(js: JetStreamContext, topology: Topology, instance: str) -> bool:
    """Create `instance` in the config bucket unless it exists; True when it was created."""
    kv = (await open_instance_buckets(js, topology)).config
    now = utc_now()
    config = InstanceConfig(id=instance, created_at=now, updated_at=now)
    try:
        await kv.create(instance, config.model_dump_json().encode())
    except KeyWrongLastSequenceError:
        return False
    return True
