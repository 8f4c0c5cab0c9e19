"""The engine port: what the connector needs from a WhatsApp implementation (neonize, sim)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from schemas.commands import SendMessage
from schemas.envelope import EventData


class EmitEvent(Protocol):
    """Hands an event to the connector; `source_id` (a WhatsApp id) makes its envelope id stable."""

    async def __call__(
        self, instance: str, data: EventData, source_id: str | None = None
    ) -> None: ...


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


class Engine(Protocol):
    """One WhatsApp implementation serving many instances (sessions)."""

    name: str

    async def start_session(self, instance: str) -> None: ...

    async def stop_session(self, instance: str) -> None: ...

    async def send(self, instance: str, message: SendMessage) -> SentMessage: ...

    async def close(self) -> None: ...
