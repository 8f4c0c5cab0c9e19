"""Command routes (send, send status, pairing, logout, read, presence, the legacy send) in-process
on fakes: what each publishes, how `Idempotency-Key` deduplicates, how `?wait=` reads the
connector's answer, and how bus trouble is answered."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from nats.errors import TimeoutError as NatsTimeoutError

from relay.stores.ports import PayloadTooLarge
from schemas.envelope import utc_now
from schemas.instances import InstanceStatus, SendRecord, send_record_key
from tests.fakes import Fakes
from tests.relay_helpers import (
    TENANT,
    TENANT_SECRET,
    refused,
    relay_on,
    route_settings,
    signed_in_process,
)

SEND = "/v1/instances/acme/messages"
TEXT = {"to": "+55 11 99999-9999", "text": "hello"}


def record(command_id: str, **fields: Any) -> bytes:
    """A send record as the connector writes it."""
    written = SendRecord(command_id=command_id, instance="acme", updated_at=utc_now(), **fields)
    return written.model_dump_json().encode()


def status(**fields: Any) -> bytes:
    fields.setdefault("updated_at", utc_now())
    return InstanceStatus(instance="acme", **fields).model_dump_json().encode()


async def test_a_send_publishes_its_command_with_the_id_as_message_id(
    relay: httpx.AsyncClient, fakes: Fakes
) -> None:
    answer = await signed_in_process(relay, "POST", SEND, TEXT)
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert (body["status"], body["duplicate"]) == ("accepted", False)
    [sent] = fakes.commands.published
    assert sent.subject == "wa.cmd.acme.send"
    assert sent.message_id == body["command_id"]
    assert body["command_id"].startswith("cmd_")
    envelope = sent.envelope
    assert (envelope["id"], envelope["type"], envelope["instance"]) == (
        body["command_id"],
        "send",
        "acme",
    )
    assert envelope["data"]["to"] == "5511999999999"  # normalised
    assert (envelope["data"]["type"], envelope["data"]["text"]) == ("text", "hello")
    assert fakes.sends.waits == []  # no `wait`: nothing watched


async def test_an_idempotency_key_becomes_the_command_id_and_deduplicates(
    relay: httpx.AsyncClient, fakes: Fakes
) -> None:
    key = {"Idempotency-Key": "order-42"}
    first = await signed_in_process(relay, "POST", SEND, TEXT, headers=key)
    again = await signed_in_process(relay, "POST", SEND, TEXT, headers=key)
    other = await signed_in_process(relay, "POST", SEND, TEXT, headers={"Idempotency-Key": "o-43"})
    assert [a.json()["command_id"] for a in (first, again, other)] == ["order-42"] * 2 + ["o-43"]
    assert [a.json()["duplicate"] for a in (first, again, other)] == [False, True, False]
    assert [sent.message_id for sent in fakes.commands.published] == ["order-42", "o-43"]


async def test_a_bad_idempotency_key_is_400_and_publishes_nothing(
    relay: httpx.AsyncClient, fakes: Fakes
) -> None:
    bad = {"Idempotency-Key": "has spaces"}
    refused(
        await signed_in_process(relay, "POST", SEND, TEXT, headers=bad),
        400,
        "invalid_idempotency_key",
    )
    assert fakes.commands.published == []


@pytest.mark.parametrize(
    ("payload", "fields"),
    [
        ({"to": "5511999999999"}, {"text"}),
        ({"to": "nobody", "text": "hi"}, {"to"}),
        ({"to": "5511999999999", "text": "hi", "colour": "red"}, {"colour"}),
        ({"type": "hologram", "to": "5511999999999"}, {"type"}),
    ],
)
async def test_invalid_sends_are_422_naming_the_fields(
    relay: httpx.AsyncClient, fakes: Fakes, payload: dict[str, Any], fields: set[str]
) -> None:
    answer = await signed_in_process(relay, "POST", SEND, payload)
    refused(answer, 422, "invalid_body")
    assert {error["field"] for error in answer.json()["errors"]} == fields
    assert fakes.commands.published == []


async def test_malformed_json_is_422(relay: httpx.AsyncClient, fakes: Fakes) -> None:
    refused(await signed_in_process(relay, "POST", SEND, body=b"{not json"), 422, "invalid_json")
    assert fakes.commands.published == []


async def test_wait_answers_the_whatsapp_result_the_connector_records(
    relay: httpx.AsyncClient, fakes: Fakes
) -> None:
    key = send_record_key("acme", "c-1")
    fakes.sends.later[key] = [
        record("c-1", state="sending"),
        record("c-1", state="sent", message_id="3EB0XYZ", chat="5511999999999@s.whatsapp.net"),
    ]
    answer = await signed_in_process(
        relay, "POST", SEND + "?wait=10", TEXT, headers={"Idempotency-Key": "c-1"}
    )
    assert answer.status_code == 200
    assert answer.json() == {
        "command_id": "c-1",
        "status": "sent",
        "duplicate": False,
        "message_id": "3EB0XYZ",
        "chat": "5511999999999@s.whatsapp.net",
        "error_code": None,
        "error": None,
    }
    assert fakes.sends.waits == [(key, 10.0)]
    shown = await signed_in_process(relay, "GET", "/v1/instances/acme/messages/c-1")
    assert (shown.json()["state"], shown.json()["message_id"]) == ("sent", "3EB0XYZ")


async def test_wait_reports_a_failed_send(relay: httpx.AsyncClient, fakes: Fakes) -> None:
    fakes.sends.values[send_record_key("acme", "c-2")] = record(
        "c-2", state="failed", error_code="not_on_whatsapp", error="no account"
    )
    answer = await signed_in_process(
        relay, "POST", SEND + "?wait=5", TEXT, headers={"Idempotency-Key": "c-2"}
    )
    assert answer.status_code == 200
    assert (answer.json()["status"], answer.json()["error_code"]) == ("failed", "not_on_whatsapp")


async def test_a_wait_that_runs_out_is_202_and_capped_by_the_relays_maximum(
    fakes: Fakes,
) -> None:
    async with relay_on(fakes, route_settings(max_wait_seconds=2)) as relay:
        key = {"Idempotency-Key": "c-3"}
        fakes.sends.later[send_record_key("acme", "c-3")] = [record("c-3", state="sending")]
        sending = await signed_in_process(relay, "POST", SEND + "?wait=30", TEXT, headers=key)
        empty = await signed_in_process(relay, "POST", SEND + "?wait=30", TEXT)
    assert (sending.status_code, sending.json()["status"]) == (202, "sending")
    assert (empty.status_code, empty.json()["status"]) == (202, "accepted")
    assert [seconds for _, seconds in fakes.sends.waits] == [2.0, 2.0]


async def test_send_status_of_an_unknown_send_is_404(relay: httpx.AsyncClient) -> None:
    never = await signed_in_process(relay, "GET", "/v1/instances/acme/messages/never-sent")
    refused(never, 404, "unknown_send")


async def test_a_command_over_the_bus_limit_is_413_before_publishing(fakes: Fakes) -> None:
    fakes.commands.max_payload = 600
    async with relay_on(fakes) as relay:
        big = {"to": "5511999999999", "text": "x" * 600}
        answer = await signed_in_process(relay, "POST", SEND, big)
        refused(answer, 413, "command_too_large")
        assert "max_payload of 600" in answer.json()["detail"]
        assert fakes.commands.published == []
        fits = await signed_in_process(relay, "POST", SEND, {**big, "text": "x" * 100})
        assert fits.status_code == 202  # the control: within the limit
    assert len(fakes.commands.published) == 1


async def test_the_bus_refusing_the_size_is_413(relay: httpx.AsyncClient, fakes: Fakes) -> None:
    fakes.commands.failure = PayloadTooLarge("nats: maximum payload exceeded")
    answer = await signed_in_process(relay, "POST", SEND, TEXT)
    refused(answer, 413, "command_too_large")
    assert answer.json()["detail"] == "nats: maximum payload exceeded"


async def test_a_bus_that_does_not_answer_is_503_with_retry_after(
    relay: httpx.AsyncClient, fakes: Fakes
) -> None:
    fakes.commands.failure = NatsTimeoutError()
    answer = await signed_in_process(relay, "POST", SEND, TEXT)
    refused(answer, 503, "bus_unavailable")
    assert answer.headers["retry-after"] == "1"


async def test_pair_answers_the_fresh_code_the_connector_reports(
    relay: httpx.AsyncClient, fakes: Fakes
) -> None:
    fakes.status.values["acme"] = status(
        state="pairing", pair_code="OLD0-CODE", updated_at=utc_now() - timedelta(minutes=5)
    )
    fakes.status.later["acme"] = [status(state="pairing", pair_code="ABCD-EFGH")]
    answer = await signed_in_process(
        relay, "POST", "/v1/instances/acme/pair", {"phone": "+55 11 99999-9999"}
    )
    assert answer.status_code == 200
    assert (answer.json()["status"], answer.json()["pair_code"]) == ("ready", "ABCD-EFGH")
    [sent] = fakes.commands.published
    assert (sent.subject, sent.envelope["data"]) == (
        "wa.cmd.acme.pair_phone",
        {"phone": "5511999999999"},
    )
    assert fakes.status.waits == [("acme", 10.0)]  # the default wait


async def test_pair_without_a_fresh_code_in_time_is_202(
    relay: httpx.AsyncClient, fakes: Fakes
) -> None:
    fakes.status.values["acme"] = status(
        state="pairing", pair_code="OLD0-CODE", updated_at=utc_now() - timedelta(minutes=5)
    )
    answer = await signed_in_process(
        relay, "POST", "/v1/instances/acme/pair?wait=0.5", {"phone": "5511999999999"}
    )
    assert answer.status_code == 202
    assert (answer.json()["status"], answer.json()["pair_code"]) == ("accepted", None)
    assert fakes.status.waits == [("acme", 0.5)]


async def test_logout_read_and_presence_are_published(
    relay: httpx.AsyncClient, fakes: Fakes
) -> None:
    logout = await signed_in_process(relay, "POST", "/v1/instances/acme/logout")
    read = await signed_in_process(
        relay,
        "POST",
        "/v1/instances/acme/read",
        {"chat": "5511999999999", "message_ids": ["3EB0A", "3EB0B"]},
    )
    typing = await signed_in_process(
        relay,
        "POST",
        "/v1/instances/acme/presence",
        {"chat": "5511999999999", "state": "composing"},
    )
    assert [a.status_code for a in (logout, read, typing)] == [202, 202, 202]
    published = {sent.subject: sent for sent in fakes.commands.published}
    assert list(published) == ["wa.cmd.acme.logout", "wa.cmd.acme.read", "wa.cmd.acme.presence"]
    assert published["wa.cmd.acme.logout"].message_id == logout.json()["command_id"]
    assert published["wa.cmd.acme.read"].envelope["data"] == {
        "chat": "5511999999999",
        "message_ids": ["3EB0A", "3EB0B"],
        "sender": None,
    }
    assert published["wa.cmd.acme.presence"].envelope["data"] == {
        "chat": "5511999999999",
        "state": "composing",
    }


@pytest.mark.parametrize(
    ("target", "payload"),
    [
        ("/v1/instances/acme/read", {"chat": "5511999999999", "message_ids": []}),
        ("/v1/instances/acme/presence", {"chat": "5511999999999", "state": "x"}),
        ("/v1/instances/acme/logout", {"extra": 1}),
        ("/v1/instances/acme/pair", {}),
    ],
)
async def test_invalid_commands_publish_nothing(
    relay: httpx.AsyncClient, fakes: Fakes, target: str, payload: dict[str, Any]
) -> None:
    refused(await signed_in_process(relay, "POST", target, payload), 422, "invalid_body")
    assert fakes.commands.published == []


async def test_the_legacy_send_publishes_like_v1_and_is_marked_deprecated(
    relay: httpx.AsyncClient, fakes: Fakes
) -> None:
    legacy = {"instanceId": "acme", "to": "5511999999999", "message": "hi"}
    answer = await signed_in_process(relay, "POST", "/api/send", legacy)
    assert answer.status_code == 202
    assert answer.headers["deprecation"] == "true"
    assert answer.headers["link"] == '</v1/instances/acme/messages>; rel="successor-version"'
    [sent] = fakes.commands.published
    assert (sent.subject, sent.envelope["data"]["text"]) == ("wa.cmd.acme.send", "hi")
    forbidden = await signed_in_process(
        relay,
        "POST",
        "/api/send",
        {**legacy, "instanceId": "other"},
        key_id=TENANT,
        secret=TENANT_SECRET,
    )
    refused(forbidden, 403, "instance_forbidden")
    assert len(fakes.commands.published) == 1
