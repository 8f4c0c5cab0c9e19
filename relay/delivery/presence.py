"""Which relays are running, for `relay.delivery.balance`: each keeps a key `relays.<token>` in
the webhook leases bucket, rewritten at every lease renewal and deleted when it stops; the
bucket's TTL drops the key of a relay that died.

Counting reads the bucket's stream information filtered to those keys (one request, allowed to
the relay's NATS user without a consumer) and skips the keys deleted since, whose delete marker
stays until the TTL removes it. Instance ids hold no dot, so no endpoint key (`global`,
`<instance>/<id>`) can look like a presence key.
"""

from __future__ import annotations

import hashlib
import json

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

PREFIX = "relays"


class RelayPresence:
    def __init__(self, js: JetStreamContext, bucket: str, holder: str) -> None:
        self._js = js
        self._bucket_name = bucket
        self._holder = holder
        self._key = f"{PREFIX}.{hashlib.sha256(holder.encode()).hexdigest()[:16]}"
        self._kv: KeyValue | None = None

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            self._kv = await self._js.key_value(self._bucket_name)
        return self._kv

    async def announce(self) -> None:
        """Say (again) that this relay runs, for one TTL."""
        value = json.dumps({"relay": self._holder}).encode()
        await (await self._bucket()).put(self._key, value)

    async def count(self) -> int:
        """How many relays run, this one included once it has announced itself."""
        kv = await self._bucket()
        subject_prefix = f"$KV.{self._bucket_name}."
        info = await self._js.stream_info(
            f"KV_{self._bucket_name}", subjects_filter=f"{subject_prefix}{PREFIX}.>"
        )
        alive = 0
        for subject in info.state.subjects or {}:
            try:
                await kv.get(subject.removeprefix(subject_prefix))
            except KeyNotFoundError:  # deleted (a relay that stopped); also KeyDeletedError
                continue
            alive += 1
        return alive

    async def leave(self) -> None:
        """This relay stops: the others count it out at once instead of after the TTL."""
        await (await self._bucket()).delete(self._key)
