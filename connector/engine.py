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
from typing import TYPE_CHECKING, Protocol

from connector.reasons import DisconnectReason
from connector.seen import SeenMessage
from schemas.commands import MarkRead, Presence, SendMessage
from schemas.envelope import ContractModel, EventData

if TYPE_CHECKING:  # a dataclass field's type: the fetching module stays out of the port
    from connector.link_preview import LinkPreview


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
    """WhatsApp's answer to a send: its message id (which we cannot choose) and when, with the
    engine's copy of what was sent (`raw`) and a poll's secret, for the connector to remember."""

    message_id: str
    chat: str
    timestamp: datetime
    raw: bytes | None = None
    poll_secret: bytes | None = None


@dataclass(frozen=True)
class PreparedMedia:
    """Media ready to upload: converted where WhatsApp needs it (voice notes, stickers)."""

    data: bytes
    mimetype: str
    seconds: int | None = None
    waveform: bytes | None = None
    animated: bool = False


@dataclass(frozen=True)
class SendContext:
    """What the connector found out before a send, so that engines only build and send:
    the media to upload, the link preview, the quoted message and the message a reaction,
    edit, deletion or forward is about (as the connector saw it, or as the caller said)."""

    media: PreparedMedia | None = None
    preview: LinkPreview | None = None
    quoted: SeenMessage | None = None
    target: SeenMessage | None = None
    mentions: tuple[str, ...] = ()
    """Everyone to mention: the send's `mentions`, and with `mention_all` every participant."""


@dataclass(frozen=True)
class EncryptedVote:
    """A poll vote as it arrives: encrypted with the poll's secret (the connector decrypts it
    with what it remembers of the poll). `poll_sender` is the poll's author."""

    message_id: str
    chat: str
    voter: str
    poll_id: str
    poll_sender: str
    enc_payload: bytes
    enc_iv: bytes
    timestamp: datetime


class SendError(Exception):
    """A send WhatsApp (or the engine) refused; `code` is stable and ends up in `message.failed`."""

    def __init__(self, code: str, reason: str, *, retryable: bool = False) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason
        self.retryable = retryable


class QueryError(Exception):
    """A query that could not be answered; `code` is one of `schemas.queries.QUERY_ERRORS`."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


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
        self,
        data: EventData,
        source_id: str | None = None,
        media: bytes | None = None,
        raw: bytes | None = None,
        poll_secret: bytes | None = None,
    ) -> None:
        """A WhatsApp event (message, receipt, presence…). `source_id` is WhatsApp's id for it
        (the envelope id derives from it); `media` carries downloaded inbound media bytes; `raw`
        the engine's copy of a message and `poll_secret` a poll's secret, to be remembered."""

    async def on_poll_vote(self, vote: EncryptedVote) -> None:
        """A vote in a poll, still encrypted."""


class EngineSession(Protocol):
    """One WhatsApp session (one linked device)."""

    async def connect(self) -> None:
        """Start connecting; progress arrives through the listener. Raises `ConnectError`."""

    async def disconnect(self) -> None:
        """Close the connection, keeping the stored credentials."""

    async def send(self, message: SendMessage, context: SendContext) -> SentMessage:
        """Send one message; raises `SendError`."""

    async def pair_phone(self, phone: str) -> str:
        """Request a phone pairing code (returned, and reported via `on_pair_code`)."""

    async def logout(self) -> None:
        """Unlink the device; the session reports `on_close(LOGGED_OUT)`."""

    async def mark_read(self, request: MarkRead) -> None: ...

    async def set_presence(self, request: Presence) -> None: ...

    async def query(self, name: str, request: ContractModel) -> ContractModel:
        """Answer query `name` (`schemas.queries.QUERIES`: its request model in, its answer
        model out); raises `QueryError`."""

    async def reject_call(self, caller: str, call_id: str) -> None:
        """Decline a ringing call (`call.offer`)."""


class Engine(Protocol):
    """One WhatsApp implementation serving many instances."""

    name: str

    def open_session(self, instance: str, listener: SessionListener) -> EngineSession: ...

    async def close(self) -> None: ...
