from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from schemas.commands import SendText, normalise_recipient, parse_send
from schemas.envelope import (
    RawEnvelope,
    encode,
    encode_parts,
    format_timestamp,
    make_event,
    timestamp_now,
    utc_now,
)
from schemas.events import EVENT_MODELS, MessageKind, MessageReceived
from schemas.export import SCHEMA_DIR, generated_schemas, render
from schemas.ids import derived_event_id, is_instance_id
from schemas.subjects import Topology, parse_subject


def test_committed_json_schemas_match_the_models() -> None:
    generated = generated_schemas()
    committed = {
        str(path.relative_to(SCHEMA_DIR)): path.read_text() for path in SCHEMA_DIR.rglob("*.json")
    }
    stale = sorted(
        name for name, schema in generated.items() if committed.get(name) != render(schema)
    )
    extra = sorted(set(committed) - set(generated))
    assert not extra, f"schema files without a model: {extra}"
    assert not stale, (
        f"JSON Schemas drifted from the models: {stale}; "
        "run `python -m schemas.export` and commit the result"
    )


def test_every_event_type_has_a_schema_file() -> None:
    for event_type in EVENT_MODELS:
        assert (SCHEMA_DIR / "events" / f"{event_type}.json").exists()


def received(**overrides: object) -> MessageReceived:
    fields: dict[str, object] = {
        "message_id": "3EB0AA",
        "chat": "5511999999999@s.whatsapp.net",
        "from": "5511999999999@s.whatsapp.net",
        "from_me": False,
        "type": "text",
        "text": "hello",
        "timestamp": datetime(2026, 11, 25, 12, 0, 0, 123456, tzinfo=UTC),
    }
    fields.update(overrides)
    return MessageReceived.model_validate(fields)


def test_envelope_wire_form() -> None:
    moment = datetime(2026, 11, 25, 12, 0, 0, 123456, tzinfo=UTC)
    envelope = make_event("acme", received(), source_id="3EB0AA", now=moment)
    wire = json.loads(encode(envelope))
    assert set(wire) == {"id", "type", "instance", "timestamp", "data"}
    assert wire["timestamp"] == "2026-11-25T12:00:00.123Z"
    assert wire["type"] == "message.received"
    assert wire["data"]["from"] == "5511999999999@s.whatsapp.net"
    assert wire["data"]["text"] == "hello"
    assert wire["id"] == derived_event_id("acme", "message.received", "3EB0AA")
    assert RawEnvelope.model_validate_json(encode(envelope)).data["message_id"] == "3EB0AA"


def test_event_ids_are_deterministic_per_source_and_distinct_per_instance() -> None:
    first = make_event("acme", received(), source_id="X1")
    again = make_event("acme", received(), source_id="X1")
    other = make_event("beta", received(), source_id="X1")
    assert first.id == again.id != other.id
    assert make_event("acme", received()).id != make_event("acme", received()).id


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError):
        received(surprise=True)


def test_message_kinds_cover_the_contract() -> None:
    assert {kind.value for kind in MessageKind} == {
        "text", "image", "video", "audio", "document", "sticker",
        "location", "contact", "reaction", "poll", "edit", "revoke", "unknown",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("5511999999999", "5511999999999"),
        ("+55 (11) 99999-9999", "5511999999999"),
        ("5511999999999@s.whatsapp.net", "5511999999999@s.whatsapp.net"),
        ("120363025@g.us", "120363025@g.us"),
    ],
)
def test_recipients_are_normalised(given: str, expected: str) -> None:
    assert normalise_recipient(given) == expected


@pytest.mark.parametrize("bad", ["", "abc", "12", "55119@example.com", "5511 999 x"])
def test_bad_recipients_are_refused(bad: str) -> None:
    with pytest.raises(ValidationError):
        parse_send({"to": bad, "text": "hi"})


def test_a_text_send_needs_no_type() -> None:
    assert parse_send({"to": "5511999999999", "text": "hi"}) == SendText(
        to="5511999999999", text="hi"
    )


@pytest.mark.parametrize(
    ("payload", "fields"),
    [
        ({"to": "5511999999999", "type": "image"}, {""}),
        ({"to": "5511999999999", "type": "image", "url": "ftp://x"}, {"url"}),
        ({"to": "5511999999999", "type": "location", "latitude": 91, "longitude": 0}, {"latitude"}),
        ({"to": "5511999999999", "type": "reaction", "emoji": "👍"}, {"message_id"}),
        ({"to": "5511999999999", "type": "hologram"}, {"type"}),
    ],
)
def test_send_kinds_name_the_failing_fields(payload: dict[str, object], fields: set[str]) -> None:
    with pytest.raises(ValidationError) as raised:
        parse_send(payload)
    assert {".".join(str(p) for p in error["loc"]) for error in raised.value.errors()} == fields


def test_topology_names() -> None:
    topology = Topology()
    assert topology.event("acme", "message.received") == "wa.evt.acme.message.received"
    assert topology.command("acme", "send") == "wa.cmd.acme.send"
    assert topology.sim("acme", "inbound") == "wa.sim.acme.inbound"
    assert (topology.events_stream, topology.commands_stream, topology.dlq_stream) == (
        "WA_EVENTS", "WA_COMMANDS", "WA_DLQ",
    )  # fmt: skip
    assert parse_subject("wa.evt.acme.message.received") == ("evt", "acme", "message.received")
    with pytest.raises(ValueError, match="prefix"):
        Topology("Bad.Prefix")


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("acme", True),
        ("a-b_c9", True),
        ("Acme", False),
        ("-a", False),
        ("a.b", False),
        ("a" * 64, False),
    ],
)
def test_instance_ids(value: str, ok: bool) -> None:
    assert is_instance_id(value) is ok


def test_nested_timestamps_use_the_envelope_format() -> None:
    moment = datetime(2026, 11, 25, 12, 0, 0, 123456, tzinfo=UTC)
    wire = json.loads(encode(make_event("acme", received(), now=moment)))
    assert wire["data"]["timestamp"] == "2026-11-25T12:00:00.123Z"


def test_encode_parts_is_encode_byte_for_byte() -> None:
    """The relay's send path encodes commands from parts; consumers parse what `encode` writes."""
    moment = datetime(2026, 11, 29, 12, 0, 0, 123456, tzinfo=UTC)
    other_zone = moment.astimezone(timezone(timedelta(hours=-3)))
    assert format_timestamp(other_zone) == format_timestamp(moment) == "2026-11-29T12:00:00.123Z"
    data = {"to": "5511999999999", "text": 'olá / "quoted" \u2028', "mentions": [], "n": 1.5}
    built = RawEnvelope(id="cmd_1", type="send", instance="acme", timestamp=moment, data=data)
    assert encode_parts("cmd_1", "send", "acme", format_timestamp(moment), data) == encode(built)
    for send in (
        {"to": "5511999999999", "text": "hi", "mentions": ["5511888888888"]},
        {"type": "location", "to": "5511999999999", "latitude": -23.5, "longitude": -46.6},
        {"type": "image", "to": "5511999999999", "url": "https://example.com/a.png"},
    ):
        message = parse_send(send)
        stamp = format_timestamp(moment)
        as_dict = encode_parts("c", "send", "acme", stamp, message.model_dump(mode="json"))
        assert encode_parts("c", "send", "acme", stamp, message) == as_dict


def test_the_timestamp_of_now_is_the_envelope_format_of_now() -> None:
    """`timestamp_now` formats the date once a second; it must read as `utc_now()` would,
    at every millisecond, across second boundaries."""
    previous = ""
    for _ in range(3000):
        before = format_timestamp(utc_now() - timedelta(milliseconds=1))
        stamp = timestamp_now()
        after = format_timestamp(utc_now() + timedelta(milliseconds=1))
        assert before <= stamp <= after, (before, stamp, after)
        assert previous <= stamp
        assert datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ")  # the envelope's form
        previous = stamp
        time.sleep(0.0005)  # so that the 3000 calls span more than one second


def test_random_ids_are_unique_and_a_forked_child_draws_its_own() -> None:
    from schemas.ids import new_command_id, random_hex

    ids = {new_command_id() for _ in range(5000)}  # more than one block of random bytes
    assert len(ids) == 5000
    assert all(len(i) == len("cmd_") + 24 for i in ids)
    random_hex(1)  # the parent holds a partly used block when it forks
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child
        os.write(write, random_hex(16).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    assert os.read(read, 64).decode() != random_hex(16)
