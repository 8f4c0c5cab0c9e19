"""The engine port: what the connector needs from a WhatsApp implementation (neonize, sim).

An engine opens an `EngineSession` for an instance on each connect attempt: the supervisor calls
`open_session` + `connect`, and after a close it calls `disconnect` on that session before it
opens the next one (after the backoff). An engine must therefore not reconnect by itself
(whatsmeow's auto-reconnect off), and a session's stored credentials must be found again by the
next `open_session` of the same instance. A session reports what happens to it through the
`SessionListener` the connector hands it (QR codes, open, close, inbound events); the listener of
a replaced session ignores its lifecycle reports but still publishes its inbound events. The
connector's session supervisor owns every decision (reconnect, backoff, status). Engines decide
nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from connector.reasons import DisconnectReason
from schemas.commands import MarkRead, Presence, SendMessage
from schemas.envelope import EventData


class EmitEvent(Protocol):
    """Publishes an event of an instance; a `source_id` (WhatsApp id) fixes its envelope id."""

    async def __call__(
        self, instance: str, data: EventData, source_id: str | None = None
    ) -> None: ...


@dataclass(frozen=True)
class Account:
    """The WhatsApp account a session is logged in as."""

    jid: str | None
    phone: str | None
    push_name: str | None


@dataclass(frozen=True)
class SentMessage:
    """WhatsApp's answer to a send: its message id (which we cannot choose) and when."""

    message_id: str
    chat: str
    timestamp: datetime


class SendError(Exception):
    """A send WhatsApp (or the engine) refused; `code` is stable and ends up in `message.failed`."""

    def __init__(self, code: str, reason: str, *, retryable: bool = False) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason
        self.retryable = retryable


class ConnectError(Exception):
    """A connect attempt that failed at once (the session reports later failures via `on_close`)."""

    def __init__(self, reason: DisconnectReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


class SessionListener(Protocol):
    """What a session reports. Implementations must not raise into the engine."""

    async def on_qr(self, code: str, expires_at: datetime) -> None:
        """A (new) QR code to scan; called again on every refresh."""

    async def on_pair_code(self, code: str, phone: str) -> None:
        """A phone pairing code was issued."""

    async def on_open(self, account: Account) -> None:
        """Connected and logged in."""

    async def on_close(
        self, reason: DisconnectReason, detail: str, *, not_before: datetime | None = None
    ) -> None:
        """The connection ended (or a connect attempt failed) for `reason`; `not_before` is the
        earliest next connect WhatsApp allows (a temporary ban's end), when it said."""

    async def on_event(
        self, data: EventData, source_id: str | None = None, media: bytes | None = None
    ) -> None:
        """A WhatsApp event (message, receipt, presence…). `source_id` is WhatsApp's id for it
        (the envelope id derives from it); `media` carries downloaded inbound media bytes."""


class EngineSession(Protocol):
    """One WhatsApp session (one linked device)."""

    async def connect(self) -> None:
        """Start connecting; progress arrives through the listener. Raises `ConnectError`."""

    async def disconnect(self) -> None:
        """Close the connection, keeping the stored credentials."""

    async def send(self, message: SendMessage) -> SentMessage:
        """Send one message; raises `SendError`."""

    async def pair_phone(self, phone: str) -> str:
        """Request a phone pairing code (returned, and reported via `on_pair_code`)."""

    async def logout(self) -> None:
        """Unlink the device; the session reports `on_close(LOGGED_OUT)`."""

    async def mark_read(self, request: MarkRead) -> None: ...

    async def set_presence(self, request: Presence) -> None: ...


class Engine(Protocol):
    """One WhatsApp implementation serving many instances."""

    name: str

    def open_session(self, instance: str, listener: SessionListener) -> EngineSession: ...

    async def close(self) -> None: ...
