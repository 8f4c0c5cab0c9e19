"""Rejects a signed request seen before, across every relay replica.

Each accepted signature is *created* as a key in a KV bucket whose entries expire after the
timestamp tolerance window (both directions, plus a margin). Creation is atomic in JetStream, so
of two replicas receiving the same request, exactly one wins. A signature older than the window
fails the timestamp check anyway, so forgetting it then is safe.
"""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from relay.auth import TOLERANCE_SECONDS
from schemas.subjects import Topology

WINDOW_SECONDS = 2 * TOLERANCE_SECONDS + 30


class ReplayGuard:
    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext, topology: Topology) -> ReplayGuard:
        try:
            kv = await js.key_value(topology.replay_bucket)
        except BucketNotFoundError:
            kv = await js.create_key_value(
                KeyValueConfig(
                    bucket=topology.replay_bucket,
                    description="Signatures of accepted relay requests (replay protection)",
                    history=1,
                    ttl=WINDOW_SECONDS,
                    storage=StorageType.FILE,
                )
            )
        return cls(kv)

    async def first_seen(self, signature: str) -> bool:
        """Record `signature`; False when it was already recorded (a replay)."""
        key = signature.removeprefix("v1=")
        try:
            await self._kv.create(key, b"")
        except KeyWrongLastSequenceError:
            return False
        return True
