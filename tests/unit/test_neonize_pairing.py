"""The pairing child's protocol: every line it writes reads back as what was meant, with real
neonize protobufs for the connection events it passes on."""

from __future__ import annotations

import json
from typing import Any

import pytest

from connector.engines.neonize_lib import nz
from connector.engines.neonize_pairing import (
    FORWARDED_EVENTS,
    LoginStatus,
    PairCode,
    Paired,
    PairFailed,
    Qr,
    RunEnded,
    event_line,
    parse_line,
)
from tests.neonize_protos import OWN, connect_failure, from_go, jid

EXAMPLES: dict[type[Any], Any] = {
    nz.Disconnected: nz.Disconnected(status=True),
    nz.LoggedOut: nz.LoggedOut(OnConnect=True, Reason=4),
    nz.StreamReplaced: nz.StreamReplaced(),
    nz.TemporaryBan: nz.TemporaryBan(Code=2, Expire=86_400),
    nz.ConnectFailure: connect_failure("SERVICE_UNAVAILABLE"),
    nz.ClientOutdated: nz.ClientOutdated(),
    nz.StreamError: nz.StreamError(Code="516", Raw=nz.Node(Tag="stream:error")),
    nz.PairStatus: nz.PairStatus(
        ID=jid(OWN, device=12), BusinessName="", Platform="android", Status=nz.PairStatus.SUCCESS
    ),
    nz.KeepAliveTimeout: nz.KeepAliveTimeout(ErrorCount=3, LastSuccess=1_772_366_400),
}


def line(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode() + b"\n"


@pytest.mark.parametrize("event_type", FORWARDED_EVENTS)
def test_every_forwarded_connection_event_reads_back_as_itself(event_type: type[Any]) -> None:
    event = from_go(EXAMPLES[event_type])
    parsed = parse_line(line(event_line(event)))
    assert type(parsed) is event_type
    assert parsed == event


@pytest.mark.parametrize(
    ("message", "news"),
    [
        ({"kind": "qr", "code": "2@abc,def"}, Qr("2@abc,def")),
        ({"kind": "login_status", "status": "timeout"}, LoginStatus("timeout")),
        (
            {"kind": "paired", "jid": "15550009999:12@s.whatsapp.net"},
            Paired("15550009999:12@s.whatsapp.net"),
        ),
        ({"kind": "ended", "error": None}, RunEnded(None)),
        ({"kind": "ended", "error": "failed to dial"}, RunEnded("failed to dial")),
        ({"kind": "pair_code", "code": "ABCD-EFGH"}, PairCode("ABCD-EFGH")),
        ({"kind": "pair_error", "error": "too short"}, PairFailed("too short")),
    ],
)
def test_news_lines(message: dict[str, Any], news: Any) -> None:
    assert parse_line(line(message)) == news


@pytest.mark.parametrize(
    "raw",
    [
        b"Press Ctrl+C to exit\n",  # Go's own print, if it ever reached the protocol
        b'{"kind": "qr"}\n',
        b'{"kind": "unheard of"}\n',
        b'{"kind": "event", "code": 9999, "data": ""}\n',
        b'{"kind": "event", "code": 8, "data": "not base64!"}\n',
        b'{"kind": "event", "code": 8, "data": "AAAA"}\n',  # not a TemporaryBan
        b"[1, 2]\n",
    ],
)
def test_anything_else_is_refused(raw: bytes) -> None:
    with pytest.raises(ValueError, match="pairing protocol"):
        parse_line(raw)
