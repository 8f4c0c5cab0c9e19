"""The `sim` engine: an in-process stand-in for the WhatsApp network.

It behaves like the neonize engine seen from the connector — sessions open, inbound messages arrive
as `message.received`, sends get a WhatsApp-like id — so end-to-end tests, demos and benchmarks run
the real connector, bus and relay. It is never chosen silently: `WABUS_ENGINE=sim` says so.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from connector.engine import EmitEvent, SendError, SentMessage
from schemas.commands import SendMessage
from schemas.envelope import utc_now
from schemas.events import ConnectionOpen, MessageReceived
from schemas.sim import FAIL_NEXT_SENDS, INBOUND, SENT, SimFailNextSends, SimInbound
from wabus.logs import get_logger

log = get_logger(__name__)

SIM_PHONE = "15550000000"


def whatsapp_like_id() -> str:
    """Shaped like the ids whatsmeow generates (`3EB0` + 18 uppercase hex digits)."""
    return "3EB0" + secrets.token_hex(9).upper()


def to_jid(address: str) -> str:
    return address if "@" in address else f"{address}@s.whatsapp.net"


@dataclass
class SimSession:
    instance: str
    sent: list[tuple[str, SendMessage]] = field(default_factory=list)
    failure: SimFailNextSends | None = None
    failures_left: int = 0


class SimControlError(ValueError):
    """A sim control message that cannot be played."""


class SimEngine:
    name = "sim"

    def __init__(self, emit: EmitEvent, clock: Callable[[], datetime] = utc_now) -> None:
        self._emit = emit
        self._clock = clock
        self.sessions: dict[str, SimSession] = {}
        self._players: set[asyncio.Task[None]] = set()

    async def start_session(self, instance: str) -> None:
        if instance in self.sessions:
            return
        self.sessions[instance] = SimSession(instance)
        jid = f"{SIM_PHONE}@s.whatsapp.net"
        await self._emit(instance, ConnectionOpen(jid=jid, phone=SIM_PHONE, push_name="wabus sim"))
        log.info("sim session open", instance=instance)

    async def stop_session(self, instance: str) -> None:
        self.sessions.pop(instance, None)

    async def _session(self, instance: str) -> SimSession:
        await self.start_session(instance)
        return self.sessions[instance]

    async def send(self, instance: str, message: SendMessage) -> SentMessage:
        session = await self._session(instance)
        if session.failure and session.failures_left > 0:
            session.failures_left -= 1
            failure = session.failure
            raise SendError(
                failure.code, "failed by the sim engine on request", retryable=failure.retryable
            )
        message_id = whatsapp_like_id()
        session.sent.append((message_id, message))
        return SentMessage(message_id=message_id, chat=to_jid(message.to), timestamp=self._clock())

    async def control(self, instance: str, action: str, payload: bytes) -> dict[str, Any]:
        """Play one control message (`inbound`, `fail_next_sends`, `sent`); returns the answer."""
        try:
            if action == INBOUND:
                inbound = SimInbound.model_validate_json(payload)
                session = await self._session(instance)
                task = asyncio.create_task(self._play(session, inbound))
                self._players.add(task)
                task.add_done_callback(self._players.discard)
            elif action == FAIL_NEXT_SENDS:
                failure = SimFailNextSends.model_validate_json(payload)
                session = await self._session(instance)
                session.failure, session.failures_left = failure, failure.count
            elif action == SENT:
                session = await self._session(instance)
                sent = [
                    {"message_id": message_id, "data": message.model_dump(mode="json")}
                    for message_id, message in session.sent
                ]
                return {"ok": True, "sent": sent}
            else:
                raise SimControlError(f"unknown sim action {action!r}")
        except ValidationError as error:
            raise SimControlError(str(error)) from error
        return {"ok": True}

    async def _play(self, session: SimSession, inbound: SimInbound) -> None:
        base_id = inbound.id or whatsapp_like_id()
        sender = to_jid(inbound.from_)
        chat = to_jid(inbound.chat) if inbound.chat else sender
        for number in range(1, inbound.repeat + 1):
            numbered = inbound.repeat > 1
            message_id = f"{base_id}{number:07d}" if numbered else base_id
            text = f"{inbound.text} #{number}" if numbered and inbound.text else inbound.text
            data = MessageReceived(
                message_id=message_id,
                chat=chat,
                from_=sender,
                from_me=False,
                type=inbound.type,
                text=text,
                timestamp=self._clock(),
                push_name=inbound.push_name,
                is_group=chat.endswith("@g.us"),
                media=inbound.media,
            )
            await self._emit(session.instance, data, source_id=message_id)
            if inbound.interval_ms and number < inbound.repeat:
                await asyncio.sleep(inbound.interval_ms / 1000)

    async def close(self) -> None:
        for task in list(self._players):
            task.cancel()
        await asyncio.gather(*self._players, return_exceptions=True)
        self.sessions.clear()
