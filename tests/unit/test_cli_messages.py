"""`wabus send` options to the relay's message, from a table; every message made here is one the
contract accepts (`parse_send`), and every refusal names what to do."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from schemas.commands import parse_send
from wabus_cli.messages import SendOptions, UsageError, build_message

TO = "5511999999999"


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (SendOptions(text="hi"), {"to": TO, "text": "hi"}),
        (
            SendOptions(text="hi https://x.example", link_preview=True, reply_to="ABC"),
            {"to": TO, "text": "hi https://x.example", "link_preview": True, "reply_to": "ABC"},
        ),
        (
            SendOptions(text="Lunch?", poll=["A", "B"], choices=2),
            {"to": TO, "type": "poll", "question": "Lunch?", "options": ["A", "B"],
             "selectable_count": 2},
        ),
        (
            SendOptions(contact=["Ana:+55 11 91234-5678,5511900000000"]),
            {"to": TO, "type": "contact",
             "contacts": [{"name": "Ana", "phones": ["+55 11 91234-5678", "5511900000000"]}]},
        ),
        (SendOptions(text="👍", react="ABC"),
         {"to": TO, "type": "reaction", "message_id": "ABC", "emoji": "👍"}),
        (SendOptions(text="fixed", edit="ABC"),
         {"to": TO, "type": "edit", "message_id": "ABC", "text": "fixed"}),
        (SendOptions(delete="ABC"), {"to": TO, "type": "delete", "message_id": "ABC"}),
        (SendOptions(forward="ABC"), {"to": TO, "type": "forward", "message_id": "ABC"}),
    ],
)  # fmt: skip
def test_options_make_the_message(options: SendOptions, expected: dict[str, Any]) -> None:
    message = build_message(TO, options)
    assert message == expected
    parse_send(message)  # the contract takes it


def test_files_go_inline_with_their_flags(tmp_path: Path) -> None:
    path = tmp_path / "note.mp3"
    path.write_bytes(b"ID3 not really")
    voice = build_message(TO, SendOptions(voice=path, view_once=True))
    assert voice["type"] == "audio"
    assert (voice["voice"], voice["view_once"]) == (True, True)
    assert base64.b64decode(voice["base64"]) == b"ID3 not really"
    document = build_message(TO, SendOptions(document=path, text="the notes"))
    assert (document["filename"], document["caption"]) == ("note.mp3", "the notes")
    parse_send(document)


@pytest.mark.parametrize(
    ("options", "says"),
    [
        (SendOptions(), "nothing to send"),
        (SendOptions(poll=["A", "B"]), "question"),
        (SendOptions(edit="ABC"), "new text"),
        (SendOptions(text="x", delete="A", forward="B"), "one kind of message at a time"),
        (SendOptions(contact=["no phone"]), "NAME:PHONE"),
        (SendOptions(text="x", view_once=True), "--view-once goes with"),
        (SendOptions(image=Path("does/not/exist.png")), "cannot read"),
    ],
)
def test_options_that_make_no_message_say_why(options: SendOptions, says: str) -> None:
    with pytest.raises(UsageError, match=says):
        build_message(TO, options)
