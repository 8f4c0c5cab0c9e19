"""The replay guard on NATS: rejects a signed request seen before, across every relay replica.

Each accepted signature is *created* as a key in a KV bucket whose entries expire after the
timestamp tolerance window (both directions, plus a margin). Creation is atomic in JetStream, so
of two replicas receiving the same request, exactly one wins. A signature older than the window
fails the timestamp check anyway, so forgetting it then is safe.
"""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.errors import APIError

from relay.auth import TOLERANCE_SECONDS
from relay.jetstream import Acks
from schemas.subjects import Topology
from wabus.buckets import open_bucket

WINDOW_SECONDS = 2 * TOLERANCE_SECONDS + 30
_CREATE_ONLY = {"Nats-Expected-Last-Subject-Sequence": "0"}
_WRONG_LAST_SEQUENCE = (10071, 10164)


class NatsReplayGuard:
    """`relay.stores.ports.ReplayGuard` on a KV bucket, written through its subjects."""

    def __init__(self, acks: Acks, bucket: str) -> None:
        self._acks = acks
        self._subject_prefix = f"$KV.{bucket}."

    @classmethod
    async def open(cls, acks: Acks, js: JetStreamContext, topology: Topology) -> NatsReplayGuard:
        await open_bucket(
            js,
            topology.replay_bucket,
            "Signatures of accepted relay requests (replay protection)",
            ttl=WINDOW_SECONDS,
        )
        return cls(acks, topology.replay_bucket)

    async def first_seen(self, signature: str) -> bool:
        """Record `signature`; False when it was already recorded (a replay).

        This is `KeyValue.create` without its per-call key validation and its delete-marker
        fallback (a key of this bucket is never deleted, only expired by the bucket's max age,
        which removes it outright): one JetStream publish that the server refuses when the
        subject already holds a message — on the hot path of every signed request.
        """
        key = signature.removeprefix("v1=")
        try:
            await self._acks.publish(self._subject_prefix + key, b"", _CREATE_ONLY)
        except APIError as error:
            if error.err_code in _WRONG_LAST_SEQUENCE:
                return False
            raise
        return True
