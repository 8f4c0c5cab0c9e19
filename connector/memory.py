"""What the connector saw of each message, kept in the messages bucket for a while.

WhatsApp refers to earlier messages by id, but renders them from more than the id: a quote
shows the quoted message's author and content, a reaction or deletion in a group names the
reacted message's author, an edit is allowed to the author for 15 minutes, a forward resends
the content, and a poll vote is encrypted with the poll's secret and names options by hash.
So every message received or sent is remembered here under `<instance>.<message id>`, for
`WABUS_MESSAGE_MEMORY_DAYS` (the bucket's TTL), in the bucket every connector shares, so a
restart or another replica finds it too.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue
from pydantic import ValidationError

from connector.seen import SeenMessage
from schemas.ids import MESSAGE_ID_PATTERN
from schemas.subjects import Topology
from wabus.buckets import open_bucket
from wabus.logs import get_logger
from wabus.natsbus import UNAVAILABLE

log = get_logger(__name__)

MAX_REMEMBERED_BYTES = 256 * 1024
"""A remembered message above this (a big thumbnail in the engine's copy) keeps no copy:
it can still be quoted by author and text, not forwarded."""

_MESSAGE_ID = re.compile(MESSAGE_ID_PATTERN)


def memory_key(instance: str, message_id: str) -> str | None:
    """The bucket key, or None for an id that cannot be one (nothing is remembered then)."""
    return f"{instance}.{message_id}" if _MESSAGE_ID.fullmatch(message_id) else None


class MessageMemory:
    """Reads and writes the messages bucket. Remembering is best effort: an outage costs a
    later quote its content, never the event being published."""

    def __init__(
        self,
        js: JetStreamContext,
        topology: Topology,
        ttl_seconds: float,
        replicas: int = 1,
        connected: Callable[[], bool] = lambda: True,
    ) -> None:
        self._connected = connected
        self._js = js
        self._topology = topology
        self._ttl = ttl_seconds
        self._replicas = replicas
        self._kv: KeyValue | None = None

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            self._kv = await open_bucket(
                self._js,
                self._topology.messages_bucket,
                "Messages the connector saw",
                ttl=self._ttl,
                replicas=self._replicas,
            )
        return self._kv

    async def remember(self, instance: str, seen: SeenMessage) -> None:
        key = memory_key(instance, seen.message_id)
        if key is None:
            log.info("message not remembered: its id is not a key", message_id=seen.message_id)
            return
        if not self._connected():
            # Waiting out the outage here would hold up the session's next events (the
            # events themselves wait in the spool); this message goes unremembered.
            log.warning("message not remembered: NATS is away", message_id=seen.message_id)
            return
        value = seen.model_dump_json().encode()
        if len(value) > MAX_REMEMBERED_BYTES:
            value = seen.model_copy(update={"raw": None}).model_dump_json().encode()
        try:
            await (await self._bucket()).put(key, value)
        except UNAVAILABLE as error:
            log.warning(
                "message not remembered: quotes, edits and votes of it will lack it",
                message_id=seen.message_id,
                error=type(error).__name__,
            )

    async def recall(self, instance: str, message_id: str) -> SeenMessage | None:
        key = memory_key(instance, message_id)
        if key is None:
            return None
        try:
            entry = await (await self._bucket()).get(key)
        except KeyNotFoundError:
            return None
        except UNAVAILABLE as error:
            log.warning("message memory not readable", message_id=message_id, error=repr(error))
            return None
        if not entry.value:
            return None
        try:
            return SeenMessage.model_validate_json(entry.value)
        except ValidationError:
            log.warning("unreadable remembered message ignored", message_id=message_id)
            return None
