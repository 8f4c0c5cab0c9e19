"""The KV buckets and the object store of the contract, opened the same way by every service.

Either service may start first, so each binds to a bucket when it exists and creates it when it
does not; when two create at once, the loser binds to the winner's bucket (JetStream answers a
creation with a different configuration by "already in use"). One table of bucket settings, here,
keeps the connector's and the relay's buckets alike whoever creates them.
"""

from __future__ import annotations

from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, ObjectStoreConfig, StorageType
from nats.js.errors import BadRequestError, BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from schemas.subjects import Topology

SEND_RECORD_TTL = 7 * 86_400.0
"""Send records outlive the commands stream's one-day age by far: a redelivery always finds one."""


async def open_bucket(
    js: JetStreamContext,
    bucket: str,
    description: str,
    *,
    ttl: float | None = None,
    replicas: int = 1,
) -> KeyValue:
    """Bind to `bucket`, creating it (history 1, file storage) when it does not exist yet."""
    try:
        return await js.key_value(bucket)
    except (BucketNotFoundError, NotFoundError):
        pass
    config = KeyValueConfig(
        bucket=bucket,
        description=description,
        history=1,
        ttl=ttl,
        storage=StorageType.FILE,
        replicas=replicas,
    )
    try:
        return await js.create_key_value(config)
    except BadRequestError:
        return await js.key_value(bucket)


async def open_media_store(
    js: JetStreamContext, topology: Topology, *, replicas: int = 1
) -> ObjectStore:
    try:
        return await js.object_store(topology.media_store)
    except (BucketNotFoundError, NotFoundError):
        pass
    config = ObjectStoreConfig(description="Inbound WhatsApp media", replicas=replicas)
    try:
        return await js.create_object_store(topology.media_store, config)
    except BadRequestError:
        return await js.object_store(topology.media_store)


@dataclass(frozen=True)
class InstanceBuckets:
    """The buckets both services use: instance configuration, status and send records."""

    config: KeyValue
    status: KeyValue
    sends: KeyValue


async def open_instance_buckets(
    js: JetStreamContext, topology: Topology, *, replicas: int = 1
) -> InstanceBuckets:
    """Open (or create) the configuration, status and sends buckets, and the media store."""
    config = await open_bucket(
        js, topology.config_bucket, "Instance configuration", replicas=replicas
    )
    status = await open_bucket(js, topology.status_bucket, "Instance status", replicas=replicas)
    sends = await open_bucket(
        js, topology.sends_bucket, "Send records", ttl=SEND_RECORD_TTL, replicas=replicas
    )
    await open_media_store(js, topology, replicas=replicas)
    return InstanceBuckets(config=config, status=status, sends=sends)
