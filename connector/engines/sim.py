"""The `sim` engine: an in-process stand-in for the WhatsApp network.

It behaves like the neonize engine seen from the connector — sessions open, inbound messages arrive
as `message.received`, sends get a WhatsApp-like id — so end-to-end tests, demos and benchmarks run
the real connector, bus and relay. It is never chosen silently: `WABUS_ENGINE=sim` says so.
Controls arrive on `<prefix>.sim.<instance>.<action>` (see `schemas.sim`).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from connector.engine import Account, SendError, SentMessage, SessionListener
from connector.reasons import DisconnectReason
from schemas.commands import MarkRead, Presence, SendMessage
from schemas.envelope import utc_now
from schemas.events import MessageReceived
from schemas.sim import FAIL_NEXT_SENDS, INBOUND, SENT, SimFailNextSends, SimInbound
from wabus.logs import get_logger

log = get_logger(__name__)

SIM_PHONE = "15550000000"


def whatsapp_like_id() -> str:
    """Shaped like the ids whatsmeow generates (`3EB0` + 18 uppercase hex digits)."""
    return "3EB0" + secrets.token_hex(9).upper()


def to_jid(address: str) -> str:
    return address if "@" in address else f"{address}@s.whatsapp.net"


class SimControlError(ValueError):
    """A sim control message that cannot be played."""


class SimSession:
    """One simulated linked device; records what it was asked to do."""

    def __init__(
        self, instance: str, listener: SessionListener, clock: Callable[[], datetime]
    ) -> None:
        self.instance = instance
        self._listener = listener
        self._clock = clock
        self.sent: list[tuple[str, SendMessage]] = []
        self.reads: list[MarkRead] = []
        self.presences: list[Presence] = []
        self.failure: SimFailNextSends | None = None
        self.failures_left = 0
        self._players: set[asyncio.Task[None]] = set()

    async def connect(self) -> None:
        account = Account(jid=f"{SIM_PHONE}@s.whatsapp.net", phone=SIM_PHONE, push_name="wabus sim")
        await self._listener.on_open(account)
        log.info("sim session open", instance=self.instance)

    async def disconnect(self) -> None:
        await self._stop_players()
        await self._listener.on_close(DisconnectReason.STOPPED, "disconnected by wabus")

    async def send(self, message: SendMessage) -> SentMessage:
        if self.failure and self.failures_left > 0:
            self.failures_left -= 1
            raise SendError(
                self.failure.code,
                "failed by the sim engine on request",
                retryable=self.failure.retryable,
            )
        message_id = whatsapp_like_id()
        self.sent.append((message_id, message))
        return SentMessage(message_id=message_id, chat=to_jid(message.to), timestamp=self._clock())

    async def pair_phone(self, phone: str) -> str:
        code = secrets.token_hex(4).upper()
        code = f"{code[:4]}-{code[4:]}"
        await self._listener.on_pair_code(code, phone)
        return code

    async def logout(self) -> None:
        await self._stop_players()
        await self._listener.on_close(DisconnectReason.LOGGED_OUT, "logged out on request")

    async def mark_read(self, request: MarkRead) -> None:
        self.reads.append(request)

    async def set_presence(self, request: Presence) -> None:
        self.presences.append(request)

    def play(self, inbound: SimInbound) -> None:
        task = asyncio.create_task(self._play(inbound))
        self._players.add(task)
        task.add_done_callback(self._players.discard)

    async def _play(self, inbound: SimInbound) -> None:
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
            await self._listener.on_event(data, source_id=message_id)
            if inbound.interval_ms and number < inbound.repeat:
                await asyncio.sleep(inbound.interval_ms / 1000)

    async def _stop_players(self) -> None:
        for task in list(self._players):
            task.cancel()
        await asyncio.gather(*self._players, return_exceptions=True)


class SimEngine:
    name = "sim"

    def __init__(self, clock: Callable[[], datetime] = utc_now) -> None:
        self._clock = clock
        self.sessions: dict[str, SimSession] = {}

    def open_session(self, instance: str, listener: SessionListener) -> SimSession:
        session = SimSession(instance, listener, self._clock)
        self.sessions[instance] = session
        return session

    async def control(self, instance: str, action: str, payload: bytes) -> dict[str, Any]:
        """Play one control message (`inbound`, `fail_next_sends`, `sent`); returns the answer."""
        session = self.sessions.get(instance)
        if session is None:
            raise SimControlError(f"no session for instance {instance!r}")
        try:
            if action == INBOUND:
                session.play(SimInbound.model_validate_json(payload))
            elif action == FAIL_NEXT_SENDS:
                failure = SimFailNextSends.model_validate_json(payload)
                session.failure, session.failures_left = failure, failure.count
            elif action == SENT:
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

    async def close(self) -> None:
        for session in self.sessions.values():
            await session._stop_players()
        self.sessions.clear()
