"""The sends bucket: what became of each send command, the basis of idempotent sends.

The record goes `sending` before the engine is called and `sent`/`failed` after, and the command
is acked only then. A redelivered command therefore finds its record and is answered from it
instead of being sent again. The one window left open is between WhatsApp accepting a message and
the `sent` record being written (neonize cannot take our message id, so WhatsApp cannot dedupe for
us): a command found `sending` is *not* sent again but answered `message.failed` with code
`outcome_unknown` — at most once, never twice (docs/connector.md, "Idempotency").

What a record means for a delivery is decided in `connector.send_decision` (pure); this module
only reads and writes records, with the compare-and-set rules that keep racing deliveries apart.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from pydantic import ValidationError

from connector.send_decision import OUTCOME_UNKNOWN
from schemas.envelope import utc_now
from schemas.instances import SendRecord, SendState, send_record_key
from schemas.subjects import Topology
from wabus.logs import get_logger
from wabus.natsbus import UNAVAILABLE

log = get_logger(__name__)

__all__ = ["OUTCOME_UNKNOWN", "SendLedger"]


class SendLedger:
    """Reads and writes the sends bucket (`<instance>.<command id>` → `SendRecord`)."""

    def __init__(self, js: JetStreamContext, topology: Topology) -> None:
        self._js = js
        self._topology = topology
        self._kv: KeyValue | None = None

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            self._kv = await self._js.key_value(self._topology.sends_bucket)
        return self._kv

    async def get(self, instance: str, command_id: str) -> SendRecord | None:
        kv = await self._bucket()
        try:
            entry = await kv.get(send_record_key(instance, command_id))
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        return SendRecord.model_validate_json(entry.value)

    async def claim(self, instance: str, command_id: str, *, retake: bool = False) -> bool:
        """Record `sending` unless a record exists (create, not put): of two deliveries of one
        command racing each other, only one goes on to send. `retake`: this process knows the
        existing `sending` record is its own and that nothing was sent, so it is overwritten."""
        record = SendRecord(
            command_id=command_id,
            instance=instance,
            state=SendState.SENDING,
            updated_at=utc_now(),
        )
        kv = await self._bucket()
        key, value = send_record_key(instance, command_id), record.model_dump_json().encode()
        if retake:
            await kv.put(key, value)
            return True
        try:
            await kv.create(key, value)
        except KeyWrongLastSequenceError:
            return False
        return True

    async def settle_failed(
        self, instance: str, command_id: str, code: str, reason: str, *, ours: bool = False
    ) -> bool:
        """Record a terminal `failed` for a send that was refused or given up, unless the record
        already tells another story. True when the record now says `failed` (answer with
        `message.failed`); False when it says `sent`, or `sending` by another delivery (`ours`:
        this process claimed it and knows nothing was sent), and must not be contradicted.

        An unreadable record is replaced: it is what kept the command from being carried out.
        Compare-and-set, so a delivery racing this one is never overwritten."""
        kv = await self._bucket()
        key = send_record_key(instance, command_id)
        record = SendRecord(
            command_id=command_id,
            instance=instance,
            state=SendState.FAILED,
            error_code=code,
            error=reason,
            updated_at=utc_now(),
        )
        value = record.model_dump_json().encode()
        try:
            entry = await kv.get(key)
        except KeyNotFoundError:
            entry = None
        try:
            if entry is None or not entry.value:
                await kv.create(key, value)
                return True
            try:
                found = SendRecord.model_validate_json(entry.value)
            except ValidationError:
                log.warning("unreadable send record replaced", command_id=command_id)
                await kv.update(key, value, last=entry.revision)
                return True
            if found.state is SendState.FAILED:
                return True
            if found.state is SendState.SENDING and ours:
                await kv.update(key, value, last=entry.revision)
                return True
        except KeyWrongLastSequenceError:
            log.info("send record changed meanwhile, left as it is", command_id=command_id)
            return False
        log.warning(
            "send record not overwritten by a failure",
            command_id=command_id,
            state=found.state.value,
            code=code,
        )
        return False

    async def write(
        self,
        instance: str,
        command_id: str,
        state: SendState,
        *,
        message_id: str | None = None,
        chat: str | None = None,
        error_code: str | None = None,
        error: str | None = None,
        now: datetime | None = None,
    ) -> SendRecord:
        """Put a record as it is given, whatever the bucket holds (tests set the scene with it)."""
        record = SendRecord(
            command_id=command_id,
            instance=instance,
            state=state,
            message_id=message_id,
            chat=chat,
            error_code=error_code,
            error=error,
            updated_at=now or utc_now(),
        )
        await self.put(record)
        return record

    async def put(self, record: SendRecord) -> None:
        """Store `record` under its key, replacing what is there."""
        kv = await self._bucket()
        key = send_record_key(record.instance, record.command_id)
        await kv.put(key, record.model_dump_json().encode())

    async def put_until_stored(self, record: SendRecord) -> None:
        """Put a final record, waiting out a NATS outage: the send already happened (or was
        given up), and forgetting it would make the redelivered command look unfinished."""
        delay = 0.1
        while True:
            try:
                await self.put(record)
                return
            except UNAVAILABLE as error:
                log.warning(
                    "send record not stored yet, retrying",
                    command_id=record.command_id,
                    error=type(error).__name__,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
