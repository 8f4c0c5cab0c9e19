"""A bounded, durable, ordered queue on local disk for events NATS could not take.

Why SQLite (the standard library's `sqlite3`): one file, transactional appends that survive a
crash of the process (WAL mode), an `INTEGER PRIMARY KEY` that keeps arrival order, and no new
dependency or server. A spool holds minutes of traffic at most, so its speed (tens of thousands of
small inserts a second) is far beyond what it needs. `synchronous=NORMAL` survives a killed
process; only a power cut can lose the last transactions, as with any write-back disk cache.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    subject    TEXT NOT NULL,
    msg_id     TEXT NOT NULL,
    body       BLOB NOT NULL,
    media_name TEXT,
    media_type TEXT,
    media      BLOB
)
"""


@dataclass(frozen=True)
class Outgoing:
    """One event as it goes on the wire, with the media object it refers to (stored first)."""

    subject: str
    msg_id: str
    body: bytes
    media_name: str | None = None
    media_type: str | None = None
    media: bytes | None = None


class SpoolFull(Exception):
    """The spool holds its configured maximum of events."""


class Spool:
    """Events in arrival order; `head` reads the oldest, `remove` drops one once published."""

    def __init__(self, path: Path, max_events: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_events = max_events
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        self._depth: int = self._db.execute("SELECT count(*) FROM spool").fetchone()[0]

    def __len__(self) -> int:
        return self._depth

    def append(self, item: Outgoing) -> int:
        """Store `item` at the tail; the depth after. Raises `SpoolFull`."""
        if self._depth >= self.max_events:
            raise SpoolFull(f"spool holds {self._depth} events (WABUS_SPOOL_MAX_EVENTS)")
        self._db.execute(
            "INSERT INTO spool (subject, msg_id, body, media_name, media_type, media)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (item.subject, item.msg_id, item.body, item.media_name, item.media_type, item.media),
        )
        self._depth += 1
        return self._depth

    def head(self, limit: int) -> list[tuple[int, Outgoing]]:
        rows = self._db.execute(
            "SELECT seq, subject, msg_id, body, media_name, media_type, media FROM spool"
            " ORDER BY seq LIMIT ?",
            (limit,),
        ).fetchall()
        return [(row[0], Outgoing(*row[1:])) for row in rows]

    def remove(self, seq: int) -> None:
        if self._db.execute("DELETE FROM spool WHERE seq = ?", (seq,)).rowcount:
            self._depth -= 1

    def close(self) -> None:
        self._db.close()
