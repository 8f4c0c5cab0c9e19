"""The local spool: ordered, bounded, durable across a reopen (a restarted connector)."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.spool import Outgoing, Spool, SpoolFull


def item(number: int, media: bytes | None = None) -> Outgoing:
    return Outgoing(
        subject=f"wa.evt.acme.message.received.{number}",
        msg_id=f"evt_{number}",
        body=f'{{"n": {number}}}'.encode(),
        media_name="med_x" if media else None,
        media_type="image/png" if media else None,
        media=media,
    )


def test_keeps_order_and_survives_a_reopen(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.sqlite3", max_events=100)
    for number in range(5):
        spool.append(item(number, media=b"bytes" if number == 2 else None))
    spool.remove(spool.head(1)[0][0])
    spool.close()
    reopened = Spool(tmp_path / "spool.sqlite3", max_events=100)
    assert len(reopened) == 4
    head = [entry for _, entry in reopened.head(10)]
    assert [entry.msg_id for entry in head] == ["evt_1", "evt_2", "evt_3", "evt_4"]
    assert head[1] == item(2, media=b"bytes")


def test_is_bounded(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.sqlite3", max_events=3)
    for number in range(3):
        assert spool.append(item(number)) == number + 1
    with pytest.raises(SpoolFull):
        spool.append(item(3))
    seq, _ = spool.head(1)[0]
    spool.remove(seq)
    spool.remove(seq)  # removing twice does not miscount
    assert len(spool) == 2
    spool.append(item(3))
    assert [entry.msg_id for _, entry in spool.head(10)] == ["evt_1", "evt_2", "evt_3"]
