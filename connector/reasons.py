"""Why a session closed, as an enum with predicates: the supervisor branches on `is_permanent`
and `wipes_session`, never on raw codes from an engine (whatsmeow's ConnectFailureReason has the
same shape)."""

from __future__ import annotations

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


_PERMANENT = frozenset(
    {
        DisconnectReason.STREAM_REPLACED,
        DisconnectReason.CLIENT_OUTDATED,
        DisconnectReason.LOGGED_OUT,
        DisconnectReason.QR_EXHAUSTED,
        DisconnectReason.RETRIES_EXHAUSTED,
    }
)
