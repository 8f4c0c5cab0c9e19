"""Endpoint runtime state kept in the endpoints bucket: an endpoint that answered 410 Gone is
disabled here, for every relay replica, until an operator enables it again."""

from __future__ import annotations

import json
from dataclasses import dataclass

from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from schemas.envelope import utc_now


@dataclass(frozen=True)
class Disabled:
    reason: str
    at: str


class EndpointStates:
    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    async def disabled(self, key: str) -> Disabled | None:
        try:
            entry = await self._kv.get(key)
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        value = json.loads(entry.value)
        return Disabled(reason=value.get("reason", ""), at=value.get("at", ""))

    async def disable(self, key: str, reason: str) -> None:
        value = {"disabled": True, "reason": reason, "at": utc_now().isoformat()}
        await self._kv.put(key, json.dumps(value).encode())

    async def enable(self, key: str) -> bool:
        """Enable `key` again; False when it was not disabled."""
        if await self.disabled(key) is None:
            return False
        await self._kv.delete(key)
        return True
