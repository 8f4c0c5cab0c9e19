"""Why a session closed, as an enum with predicates: the supervisor branches on `is_permanent`,
`wipes_session` and `is_penalty`, never on raw codes from an engine (whatsmeow's
ConnectFailureReason has the same shape). `Closure` is what an engine knows about one close,
including when WhatsApp allows the next connect, as a time rather than words."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class DisconnectReason(StrEnum):
    NETWORK = "network"
    """The socket dropped or could not be dialled; retry with backoff."""
    CONNECT_FAILED = "connect_failed"
    """WhatsApp refused this connect attempt (a transient server-side failure)."""
    TEMPORARY_BAN = "temporary_ban"
    """WhatsApp banned the account for a while; retry after the ban, not sooner."""
    STREAM_REPLACED = "stream_replaced"
    """Another client opened the same session; fighting it would make both flap."""
    CLIENT_OUTDATED = "client_outdated"
    """WhatsApp no longer accepts this client version; an upgrade is needed."""
    LOGGED_OUT = "logged_out"
    """The device was unlinked (from the phone, or by WhatsApp); the session is gone."""
    QR_EXHAUSTED = "qr_exhausted"
    """Nobody scanned the QR through the configured number of refreshes."""
    RETRIES_EXHAUSTED = "retries_exhausted"
    """Reconnecting failed `WABUS_RECONNECT_MAX_ATTEMPTS` times in a row."""
    STOPPED = "stopped"
    """wabus itself closed the session (instance stopped or deleted, shutdown)."""
    UNKNOWN = "unknown"
    """An engine-specific failure with no better mapping; treated as transient."""

    @property
    def is_permanent(self) -> bool:
        """No automatic reconnect: a person has to act (pair again, upgrade, resolve a conflict)."""
        return self in _PERMANENT

    @property
    def wipes_session(self) -> bool:
        """The stored credentials are no longer valid: the next connect needs pairing."""
        return self is DisconnectReason.LOGGED_OUT

    @property
    def is_expected(self) -> bool:
        """Asked for by wabus, so neither an error nor a reason to reconnect."""
        return self is DisconnectReason.STOPPED

    @property
    def is_penalty(self) -> bool:
        """WhatsApp penalised the account for a while: connecting before the penalty ends
        prolongs it, so the next connect waits for its end (or, when WhatsApp did not say when,
        for the whole backoff cap)."""
        return self is DisconnectReason.TEMPORARY_BAN


_PERMANENT = frozenset(
    {
        DisconnectReason.STREAM_REPLACED,
        DisconnectReason.CLIENT_OUTDATED,
        DisconnectReason.LOGGED_OUT,
        DisconnectReason.QR_EXHAUSTED,
        DisconnectReason.RETRIES_EXHAUSTED,
    }
)


@dataclass(frozen=True)
class Closure:
    """One close as an engine saw it: the reason (which decides), words for people, and the
    earliest moment WhatsApp allows the next connect (a temporary ban's end), when it said."""

    reason: DisconnectReason
    detail: str = ""
    not_before: datetime | None = None
