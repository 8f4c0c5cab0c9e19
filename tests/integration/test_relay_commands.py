"""Command routes (send of every kind, send status, pairing, logout, read, presence) against a
real relay and a real nats-server; send records and status are written as the connector would."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from relay.app import create_app
from relay.client import RelayClient, RelayError
from tests.conftest import API_KEY_ID, API_SECRET
from tests.media_samples import image_bytes, wav_tone
from tests.relay_helpers import (
    commands_stored,
    last_command,
    signed,
    write_send_record,
    write_status,
)
from tests.support import running
from wabus.embedded import NATS_MAX_PAYLOAD
from wabus.settings import Settings

SEND = "/v1/instances/acme/messages"


@pytest.fixture
async def url(settings: Settings, nc: NATS) -> AsyncIterator[str]:
    async with running(create_app(settings)) as base:
        yield base


@pytest.fixture
async def client(url: str) -> AsyncIterator[RelayClient]:
    async with RelayClient(url, API_KEY_ID, API_SECRET) as relay:
        yield relay


KINDS: list[dict[str, Any]] = [
    {"to": "+55 11 99999-9999", "text": "hello"},
    {"type": "image", "to": "5511999999999", "url": "https://example.com/a.jpg", "caption": "c"},
    {"type": "video", "to": "5511999999999", "url": "https://example.com/a.mp4"},
    {"type": "audio", "to": "5511999999999", "base64": base64.b64encode(wav_tone(0.2)).decode(),
     "mimetype": "audio/wav", "voice": True},
    {"type": "document", "to": "120363000000000000@g.us", "url": "https://example.com/a.pdf",
     "filename": "a.pdf"},
    {"type": "location", "to": "5511999999999", "latitude": -23.5, "longitude": -46.6},
    {"type": "reaction", "to": "5511999999999", "message_id": "3EB0ABC", "emoji": "👍"},
    {"type": "sticker", "to": "5511999999999",
     "base64": base64.b64encode(image_bytes("PNG")).decode()},
    {"type": "poll", "to": "120363000000000000@g.us", "question": "Lunch?",
     "options": ["A", "B"], "selectable_count": 1},
    {"type": "edit", "to": "5511999999999", "message_id": "3EB0ABC", "text": "fixed"},
    {"type": "delete", "to": "5511999999999", "message_id": "3EB0ABC"},
    {"type": "contact", "to": "5511999999999",
     "contacts": [{"name": "Ana", "phones": ["5511912345678"], "vcard": None}]},
    {"type": "forward", "to": "5511999999999", "message_id": "3EB0ABC"},
]  # fmt: skip


@pytest.mark.parametrize("message", KINDS, ids=lambda m: m.get("type", "text"))
async def test_every_kind_of_send_becomes_a_command(
    client: RelayClient, nc: NATS, settings: Settings, message: dict[str, Any]
) -> None:
    answer = await client.send("acme", message)
    assert answer["status"] == "accepted"
    assert answer["duplicate"] is False
    command = await last_command(nc, settings, "acme", "send")
    assert command["id"] == answer["command_id"]
    assert (command["type"], command["instance"]) == ("send", "acme")
    assert command["data"]["type"] == message.get("type", "text")
    for field, value in message.items():
        if field != "to":
            assert command["data"][field] == value
    assert command["data"]["to"] in {"5511999999999", "120363000000000000@g.us"}


async def test_idempotency_key_becomes_the_command_id_and_deduplicates(
    client: RelayClient, nc: NATS, settings: Settings
) -> None:
    first = await client.send_text("acme", "5511999999999", "once", idempotency_key="order-42")
    again = await client.send_text("acme", "5511999999999", "once", idempotency_key="order-42")
    assert first["command_id"] == again["command_id"] == "order-42"
    assert (first["duplicate"], again["duplicate"]) == (False, True)
    assert await commands_stored(nc, settings) == 1


async def test_wait_returns_the_whatsapp_result(
    client: RelayClient, nc: NATS, settings: Settings
) -> None:
    async def connector_answers() -> None:
        await asyncio.sleep(0.2)
        await write_send_record(nc, settings, "acme", command_id="c-1", state="sending")
        await asyncio.sleep(0.1)
        await write_send_record(
            nc, settings, "acme", command_id="c-1", state="sent", message_id="3EB0XYZ",
            chat="5511999999999@s.whatsapp.net",
        )  # fmt: skip

    answering = asyncio.create_task(connector_answers())
    answer = await client.send(
        "acme", {"to": "5511999999999", "text": "hi"}, idempotency_key="c-1", wait=10
    )
    await answering
    assert answer == {
        "command_id": "c-1", "status": "sent", "duplicate": False, "message_id": "3EB0XYZ",
        "chat": "5511999999999@s.whatsapp.net", "error_code": None, "error": None,
    }  # fmt: skip
    record = await client.send_status("acme", "c-1")
    assert (record["state"], record["message_id"]) == ("sent", "3EB0XYZ")


async def test_wait_reports_a_failed_send(
    client: RelayClient, nc: NATS, settings: Settings
) -> None:
    await write_send_record(
        nc, settings, "acme", command_id="c-2", state="failed", error_code="not_on_whatsapp",
        error="no account",
    )  # fmt: skip
    answer = await client.send(
        "acme", {"to": "5511999999999", "text": "hi"}, idempotency_key="c-2", wait=5
    )
    assert (answer["status"], answer["error_code"]) == ("failed", "not_on_whatsapp")


async def test_wait_that_runs_out_answers_202_with_the_command_id(
    url: str, nc: NATS, settings: Settings
) -> None:
    started = asyncio.get_running_loop().time()
    response = await signed(url, "POST", SEND + "?wait=0.5", {"to": "5511999999999", "text": "x"})
    elapsed = asyncio.get_running_loop().time() - started
    assert response.status_code == 202
    assert response.json()["status"] == "accepted"
    assert response.json()["command_id"].startswith("cmd_")
    assert elapsed >= 0.5  # it waited as asked before answering 202 (never sooner)
    assert await commands_stored(nc, settings) == 1
    too_long = await signed(url, "POST", SEND + "?wait=500", {"to": "5511999999999", "text": "x"})
    assert (too_long.status_code, too_long.json()["code"]) == (422, "invalid_query")
    assert await commands_stored(nc, settings) == 1


async def test_send_status_of_an_unknown_send_is_404(client: RelayClient) -> None:
    with pytest.raises(RelayError) as raised:
        await client.send_status("acme", "never-sent")
    assert (raised.value.status, raised.value.code) == (404, "unknown_send")
    with pytest.raises(RelayError) as bad:
        await client.send_status("acme", "bad id!")
    assert bad.value.status in {401, 404}  # httpx may encode the space differently from us


@pytest.mark.parametrize(
    ("payload", "fields"),
    [
        ({"to": "5511999999999"}, {"text"}),
        ({"to": "nobody", "text": "hi"}, {"to"}),
        ({"text": ""}, {"to", "text"}),
        ({"to": "5511999999999", "text": "hi", "colour": "red"}, {"colour"}),
        ({"type": "image", "to": "5511999999999"}, {"body"}),
        ({"type": "location", "to": "5511999999999", "latitude": 91, "longitude": 0}, {"latitude"}),
        ({"type": "hologram", "to": "5511999999999"}, {"type"}),
    ],
)
async def test_invalid_sends_get_422_naming_the_fields(
    url: str, nc: NATS, settings: Settings, payload: dict[str, Any], fields: set[str]
) -> None:
    response = await signed(url, "POST", SEND, payload)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == "invalid_body"
    assert {error["field"] for error in problem["errors"]} == fields
    assert await commands_stored(nc, settings) == 0


async def test_malformed_json_oversized_bodies_and_commands_over_max_payload(
    url: str, nc: NATS, settings: Settings
) -> None:
    malformed = await signed(url, "POST", SEND, body=b"{not json")
    assert (malformed.status_code, malformed.json()["code"]) == (422, "invalid_json")
    not_object = await signed(url, "POST", SEND, body=b"[1, 2]")
    assert not_object.status_code == 422
    huge = b"x" * (settings.max_send_body_bytes + 1)
    response = await signed(url, "POST", SEND, body=huge)
    assert (response.status_code, response.json()["code"]) == (413, "body_too_large")
    other = b"x" * (settings.max_body_bytes + 1)
    response = await signed(url, "POST", "/v1/instances/acme/read", body=other)
    assert (response.status_code, response.json()["code"]) == (413, "body_too_large")
    assert await commands_stored(nc, settings) == 0


async def test_a_send_limit_above_the_servers_max_payload_is_refused_before_publishing(
    nc: NATS, settings: Settings
) -> None:
    """Only a relay whose `WABUS_MAX_SEND_BODY_BYTES` was raised past the NATS server's
    `max_payload` meets this: the command is refused with a 413 saying what to do."""
    raised = settings.model_copy(update={"max_send_body_bytes": 2 * NATS_MAX_PAYLOAD})
    media = {"type": "image", "to": "5511999999999", "base64": "A" * (NATS_MAX_PAYLOAD + 4)}
    fits = {"type": "image", "to": "5511999999999", "base64": "A" * (NATS_MAX_PAYLOAD // 2)}
    async with running(create_app(raised)) as url:
        response = await signed(url, "POST", SEND, media)
        assert (response.status_code, response.json()["code"]) == (413, "command_too_large")
        assert "max_payload" in response.json()["detail"]
        assert await commands_stored(nc, settings) == 0
        accepted = await signed(url, "POST", SEND, fits)  # the control: within the server's limit
        assert accepted.status_code == 202
        assert await commands_stored(nc, settings) == 1


async def test_bad_idempotency_key_and_instance_id(url: str, nc: NATS, settings: Settings) -> None:
    body = {"to": "5511999999999", "text": "hi"}
    response = await signed(url, "POST", SEND, body, headers={"Idempotency-Key": "has spaces"})
    assert (response.status_code, response.json()["code"]) == (400, "invalid_idempotency_key")
    response = await signed(url, "POST", "/v1/instances/Bad.Id/messages", body)
    assert (response.status_code, response.json()["code"]) == (404, "unknown_instance")
    assert await commands_stored(nc, settings) == 0


async def test_pair_waits_for_the_code_the_connector_reports(
    client: RelayClient, nc: NATS, settings: Settings
) -> None:
    async def connector_answers() -> None:
        command = await _eventually_command(nc, settings, "pair_phone")
        assert command["data"] == {"phone": "5511999999999"}
        await write_status(nc, settings, "acme", state="pairing", pair_code="ABCD-EFGH")

    answering = asyncio.create_task(connector_answers())
    answer = await client.pair("acme", "+55 11 99999-9999", wait=10)
    await answering
    assert (answer["status"], answer["pair_code"]) == ("ready", "ABCD-EFGH")


async def test_pair_without_an_answer_in_time_is_202(
    client: RelayClient, nc: NATS, settings: Settings
) -> None:
    answer = await client.pair("acme", "5511999999999", wait=0.3)
    assert (answer["status"], answer["pair_code"]) == ("accepted", None)
    assert (await last_command(nc, settings, "acme", "pair_phone"))["id"] == answer["command_id"]
    with pytest.raises(RelayError) as raised:
        await client.pair("acme", "not a phone", wait=0)
    assert raised.value.code == "invalid_body"


async def test_logout_read_and_presence_are_published(
    client: RelayClient, nc: NATS, settings: Settings
) -> None:
    logout = await client.logout("acme")
    assert (await last_command(nc, settings, "acme", "logout"))["id"] == logout["command_id"]
    read = await client.mark_read("acme", "5511999999999", ["3EB0A", "3EB0B"])
    command = await last_command(nc, settings, "acme", "read")
    assert command["id"] == read["command_id"]
    assert command["data"] == {"chat": "5511999999999", "message_ids": ["3EB0A", "3EB0B"],
                               "sender": None}  # fmt: skip
    typing = await client.presence("acme", "5511999999999", "composing")
    command = await last_command(nc, settings, "acme", "presence")
    assert command["id"] == typing["command_id"]
    assert command["data"] == {"chat": "5511999999999", "state": "composing"}
    assert await commands_stored(nc, settings) == 3


@pytest.mark.parametrize(
    ("target", "payload", "code"),
    [
        ("/v1/instances/acme/read", {"chat": "5511999999999", "message_ids": []}, "invalid_body"),
        ("/v1/instances/acme/presence", {"chat": "5511999999999", "state": "x"}, "invalid_body"),
        ("/v1/instances/acme/logout", {"extra": 1}, "invalid_body"),
        ("/v1/instances/acme/pair", {}, "invalid_body"),
    ],
)
async def test_invalid_commands_publish_nothing(
    url: str, nc: NATS, settings: Settings, target: str, payload: dict[str, Any], code: str
) -> None:
    response = await signed(url, "POST", target, payload)
    assert (response.status_code, response.json()["code"]) == (422, code)
    assert await commands_stored(nc, settings) == 0


async def _eventually_command(nc: NATS, settings: Settings, name: str) -> dict[str, Any]:
    for _ in range(200):
        try:
            return await last_command(nc, settings, "acme", name)
        except Exception:
            await asyncio.sleep(0.02)
    raise AssertionError(f"no {name} command")


def test_kinds_cover_every_send_model() -> None:
    from schemas.commands import SEND_KINDS

    assert {m.get("type", "text") for m in KINDS} == set(SEND_KINDS)
    assert json.dumps(KINDS)
