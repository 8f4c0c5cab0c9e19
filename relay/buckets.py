"""Opening the KV buckets the relay reads and writes: bound if they exist, created if not.

Either service may start first, so both bind-or-create; the first creation wins and the other
binds to it (a creation race is retried as a bind).
"""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BadRequestError, BucketNotFoundError
from nats.js.kv import KeyValue


async def open_bucket(js: JetStreamContext, bucket: str, description: str) -> KeyValue:
    try:
        return await js.key_value(bucket)
    except BucketNotFoundError:
        pass
    try:
        return await js.create_key_value(
            KeyValueConfig(
                bucket=bucket, description=description, history=1, storage=StorageType.FILE
            )
        )
    except BadRequestError:
        return await js.key_value(bucket)
