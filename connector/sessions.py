"""Sessions of the running instances, and the listener that turns what a session reports into
published events.

This first version opens a session the first time an instance is used. The lifecycle state
machine, the configuration bucket and reconnects build on it.
"""

from __future__ import annotations

from datetime import datetime

from connector.engine import Account, EmitEvent, Engine, EngineSession
from connector.reasons import DisconnectReason
from schemas.envelope import EventData
from schemas.events import (
    ConnectionClose,
    ConnectionLoggedOut,
    ConnectionOpen,
    ConnectionPairCode,
    ConnectionQR,
)


class PublishingListener:
    """Publishes each report of one session as an event of its instance."""

    def __init__(self, instance: str, emit: EmitEvent) -> None:
        self._instance = instance
        self._emit = emit
        self._qr_refreshes = 0

    async def on_qr(self, code: str, expires_at: datetime) -> None:
        data = ConnectionQR(qr=code, expires_at=expires_at, refresh=self._qr_refreshes)
        self._qr_refreshes += 1
        await self._emit(self._instance, data)

    async def on_pair_code(self, code: str, phone: str) -> None:
        await self._emit(self._instance, ConnectionPairCode(code=code, phone=phone))

    async def on_open(self, account: Account) -> None:
        self._qr_refreshes = 0
        opened = ConnectionOpen(jid=account.jid, phone=account.phone, push_name=account.push_name)
        await self._emit(self._instance, opened)

    async def on_close(self, reason: DisconnectReason, detail: str) -> None:
        if reason.wipes_session:
            await self._emit(self._instance, ConnectionLoggedOut(reason=detail))
            return
        will_reconnect = not (reason.is_permanent or reason.is_expected)
        closed = ConnectionClose(reason=reason.value, will_reconnect=will_reconnect)
        await self._emit(self._instance, closed)

    async def on_event(
        self, data: EventData, source_id: str | None = None, media: bytes | None = None
    ) -> None:
        await self._emit(self._instance, data, source_id=source_id)


class Sessions:
    """Instance id → its open session."""

    def __init__(self, engine: Engine, emit: EmitEvent) -> None:
        self._engine = engine
        self._emit = emit
        self._open: dict[str, EngineSession] = {}

    async def get(self, instance: str) -> EngineSession:
        session = self._open.get(instance)
        if session is None:
            listener = PublishingListener(instance, self._emit)
            session = self._open[instance] = self._engine.open_session(instance, listener)
            await session.connect()
        return session

    async def close(self) -> None:
        for session in self._open.values():
            await session.disconnect()
        self._open.clear()
