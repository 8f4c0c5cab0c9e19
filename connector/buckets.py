"""The KV buckets and object store the connector uses, created when missing.

Creating is idempotent and cheap, so each service makes sure of what it needs at start rather
than depending on another one having run first.
"""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, ObjectStoreConfig
from nats.js.errors import BucketNotFoundError, KeyWrongLastSequenceError, NotFoundError

from schemas.subjects import Topology

SEND_RECORD_TTL = 7 * 86_400.0
"""Send records outlive the commands stream's one-day age by far: a redelivery always finds one."""


async def ensure_buckets(
    js: JetStreamContext, topology: Topology, lease_ttl: float | None = None
) -> None:
    """`lease_ttl`: also the leases bucket, whose TTL is the lease time (see `leases.py`)."""
    wanted = [
        KeyValueConfig(bucket=topology.config_bucket, history=1),
        KeyValueConfig(bucket=topology.status_bucket, history=1),
        KeyValueConfig(bucket=topology.sends_bucket, history=1, ttl=SEND_RECORD_TTL),
    ]
    if lease_ttl is not None:
        wanted.append(KeyValueConfig(bucket=topology.leases_bucket, history=1, ttl=lease_ttl))
    for config in wanted:
        try:
            await js.key_value(config.bucket)
        except (BucketNotFoundError, NotFoundError):
            await js.create_key_value(config)
    try:
        await js.object_store(topology.media_store)
    except (BucketNotFoundError, NotFoundError):
        await js.create_object_store(
            topology.media_store, ObjectStoreConfig(description="Inbound WhatsApp media")
        )


async def ensure_instance(js: JetStreamContext, topology: Topology, instance: str) -> bool:
    """Create `instance` in the config bucket unless it exists; True when it was created."""
    from schemas.envelope import utc_now
    from schemas.instances import InstanceConfig

    await ensure_buckets(js, topology)
    kv = await js.key_value(topology.config_bucket)
    now = utc_now()
    config = InstanceConfig(id=instance, created_at=now, updated_at=now)
    try:
        await kv.create(instance, config.model_dump_json().encode())
    except KeyWrongLastSequenceError:
        return False
    return True
