"""Hostile identifiers and poison commands (issue 10, item 1), against a real relay, a real
nats-server and the connector on the sim engine.

- The relay refuses every identifier NATS cannot use where it enters, and publishes nothing.
- A command that reaches the connector with an unusable id or body is answered `message.failed`
  (`invalid_command`) and acked; a flood of them never stalls another instance's sends.
- A command whose processing keeps failing stops at the delivery bound, answered
  `redelivery_exhausted`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy, ConsumerConfig
from prometheus_client import REGISTRY

from connector.sends import SendLedger
from relay.app import create_app
from schemas.instances import SendState
from tests import connector_support as cs
from tests.relay_helpers import commands_stored, signed
from tests.support import eventually, running
from wabus.buckets import open_bucket
from wabus.embedded import free_port
from wabus.natsbus import ensure_streams
from wabus.settings import Settings

SEND_BODY = {"to": "5511999999999", "text": "hi"}
BAD_KEYS: list[str | bytes] = [
    "a.", "a..b", ".a", "a b", "a*", "a>", "é".encode(), "ключ".encode(), "k" * 129,
]  # fmt: skip
"""Idempotency-Keys NATS cannot store as `<instance>.<key>` (non-ASCII sent as raw bytes)."""
COMMAND_ROUTES = [
    ("/v1/instances/acme/messages", SEND_BODY),
    ("/api/send", {"instanceId": "acme", "to": "5511999999999", "message": "hi"}),
    ("/v1/instances/acme/presence", {"chat": "5511999999999", "state": "composing"}),
]
BAD_IDS = ["a.", "a..b", ".a", "a b", "a*", "a>", "Acme", "é", "a" * 64]
"""Instance and endpoint ids that are no single NATS subject token (or break the id rule)."""


def _key_header(key: str | bytes) -> Any:
    """httpx sends bytes as they are: how a non-ASCII key reaches the relay."""
    return {"Idempotency-Key": key}


def _is_problem(response: httpx.Response, status: int, code: str) -> bool:
    return (
        response.status_code == status
        and response.headers["content-type"].startswith("application/problem+json")
        and response.json()["code"] == code
    )


# -- the relay ------------------------------------------------------------------------------


async def test_the_relay_refuses_idempotency_keys_nats_cannot_store(
    settings: Settings, nc: NATS
) -> None:
    async with running(create_app(settings)) as url:
        answers = [
            await signed(url, "POST", route, body, headers=_key_header(key))
            for key in BAD_KEYS
            for route, body in COMMAND_ROUTES
        ]
        assert len(answers) == len(BAD_KEYS) * len(COMMAND_ROUTES)
        assert [a.status_code for a in answers if a.status_code >= 500] == []
        assert all(_is_problem(a, 400, "invalid_idempotency_key") for a in answers), [
            (a.status_code, a.text) for a in answers
        ]
        assert "double dot" in answers[0].json()["detail"]
        assert await commands_stored(nc, settings) == 0
        # positive control: keys at the edges of the rule are accepted and become the id
        for key in ("order.42", "a=b-c_d", "K" * 128):
            accepted = await signed(
                url, "POST", COMMAND_ROUTES[0][0], SEND_BODY, headers=_key_header(key)
            )
            assert accepted.status_code == 202, accepted.text
            assert accepted.json()["command_id"] == key
        assert await commands_stored(nc, settings) == 3


async def test_the_relay_refuses_instance_and_endpoint_ids_that_are_no_subject_token(
    settings: Settings, nc: NATS
) -> None:
    hook = {"url": "https://example.com/hook"}
    async with running(create_app(settings)) as url:
        answers = [await signed(url, "POST", "/v1/instances", {"id": bad}) for bad in BAD_IDS]
        answers += [
            await signed(
                url, "POST", "/v1/instances", {"id": "acme", "webhooks": [hook | {"id": bad}]}
            )
            for bad in BAD_IDS
        ]
        assert [a.status_code for a in answers if a.status_code >= 500] == []
        assert all(_is_problem(a, 422, "invalid_body") for a in answers), [
            (a.status_code, a.text) for a in answers
        ]
        sends = [
            await signed(url, "POST", f"/v1/instances/{bad}/messages", SEND_BODY)
            for bad in ("a..b", "a.", "Acme")
        ]
        assert all(_is_problem(a, 404, "unknown_instance") for a in sends)
        assert await commands_stored(nc, settings) == 0
        # positive control
        created = await signed(
            url, "POST", "/v1/instances", {"id": "acme-1", "webhooks": [{**hook, "id": "hook-1"}]}
        )
        assert created.status_code == 201, created.text
        config = await open_bucket(nc.jetstream(), settings.topology.config_bucket, "config")
        assert await config.keys() == ["acme-1"]


# -- the connector ---------------------------------------------------------------------------


@pytest.fixture
async def connector(settings: Settings, nc: NATS) -> AsyncIterator[Settings]:
    settings = settings.model_copy(update={"port": free_port()})
    async with cs.connector_running(settings, nc):
        for instance in ("acme", "beta"):
            await cs.create_instance(nc, settings.topology, instance)
        for instance in ("acme", "beta"):
            await eventually(lambda i=instance: cs.state_is(nc, settings.topology, i, "open"))  # type: ignore[misc]
        yield settings


def envelope(
    command_id: Any, instance: str = "acme", kind: str = "send", data: Any = SEND_BODY
) -> bytes:
    body = {"id": command_id, "type": kind, "instance": instance,
            "timestamp": "2026-11-25T12:00:00.000Z", "data": data}  # fmt: skip
    return json.dumps(body).encode()


@dataclass(frozen=True)
class Bad:
    """A command published on NATS directly, and the answer the connector owes it."""

    name: str
    data: bytes
    answer_id: str | None
    """The `command_id` of its `message.failed`; None: nothing to name, acked and logged only."""
    why: str
    """Words the answer's reason must contain (the field)."""
    instance: str = "acme"
    command: str = "send"
    msg_id: str | None = None
    absent: str | None = None
    """With no answer: an id no answer may name."""


BAD_COMMAND_IDS = ["a.", "a..b", ".a", "a b", "a*", "a>", "é"]
BAD_COMMANDS = [
    *[Bad(f"id {v!r}", envelope(v), v, "id:") for v in BAD_COMMAND_IDS],
    Bad("id too long", envelope("k" * 129), None, "id:", msg_id="k" * 129, absent="k" * 129),
    Bad("no id, a Nats-Msg-Id", envelope(None), "hdr-1", "id:", msg_id="hdr-1"),
    Bad("id a number", envelope(42), None, "id:", absent="42"),
    Bad("no text", envelope("body-1", data={"to": "5511999999999"}), "body-1", "text"),
    Bad("bad recipient", envelope("body-2", data={"to": "nobody", "text": "x"}), "body-2", "to"),
    Bad("data not an object", envelope("body-3", data="x"), "body-3", "data"),
    Bad("other instance", envelope("inst-1", instance="beta"), "inst-1", "instance:"),
    Bad("type vs subject", envelope("type-1", kind="presence"), "type-1", "type:"),
    Bad("unknown command", envelope("cmd-x", kind="selfdestruct"), "cmd-x", "unknown command",
        command="selfdestruct"),
    Bad("not JSON", b"\xff\x00{garbage", "json-1", "not JSON", msg_id="json-1"),
    Bad("JSON array", b"[1, 2]", "array-1", "JSON object", msg_id="array-1"),
    Bad("JSON nested too deeply", b"[" * 100_000, "deep-1", "too deeply", msg_id="deep-1"),
    Bad("extra field", envelope("env-1")[:-1] + b', "x": 1}', "env-1", "envelope:"),
    Bad("bad phone to pair", envelope("pair-1", kind="pair_phone", data={"phone": "abc"}),
        "pair-1", "phone", command="pair_phone"),
    Bad("subject not an instance", envelope("subj-1"), None, "subject", instance="ACME",
        absent="subj-1"),
    Bad("subject token with =", envelope("subj-2"), None, "subject", instance="a=b",
        absent="subj-2"),
]  # fmt: skip
FLOOD = 1100
"""More than the consumer's ack-pending window (1,024) that every instance shares."""


def invalid_commands_counted() -> float:
    value = REGISTRY.get_sample_value("wabus_connector_errors_total", {"code": "invalid_command"})
    return value or 0.0


async def consumer_idle(nc: NATS, settings: Settings) -> Any:
    info = await nc.jetstream().consumer_info(settings.topology.commands_stream, "connector")
    return info if info.num_ack_pending == 0 and info.num_pending == 0 else None


async def publish_raw(nc: NATS, settings: Settings, bad: Bad) -> None:
    headers = {"Nats-Msg-Id": bad.msg_id} if bad.msg_id else None
    subject = f"{settings.topology.prefix}.cmd.{bad.instance}.{bad.command}"
    await nc.jetstream().publish(subject, bad.data, headers=headers)


async def test_invalid_commands_are_answered_and_acked_and_never_stall_others(
    connector: Settings, nc: NATS
) -> None:
    topology = connector.topology
    counted = invalid_commands_counted()
    for bad in BAD_COMMANDS:
        await publish_raw(nc, connector, bad)
    flood = [f"flood-{n}." for n in range(FLOOD)]  # the attack: a trailing dot
    for command_id in flood:
        await publish_raw(nc, connector, Bad("flood", envelope(command_id), command_id, "id:",
                                             msg_id=command_id))  # fmt: skip
    # positive controls, published after the flood: another instance, and a dotted valid id
    await cs.publish_command(nc, topology, "beta", "after-flood", SEND_BODY)
    await cs.publish_command(nc, topology, "acme", "order.42", SEND_BODY)

    sent = await eventually(lambda: _events(nc, topology, "message.sent", 2), timeout=90)
    assert {(e["instance"], e["data"]["command_id"]) for e in sent} == {
        ("beta", "after-flood"), ("acme", "order.42"),
    }  # fmt: skip
    info = await eventually(lambda: consumer_idle(nc, connector), timeout=30)
    assert info.num_redelivered == 0  # every bad command acked on its first delivery
    assert (await nc.jetstream().stream_info(topology.commands_stream)).state.messages == 0

    failed = await _events(nc, topology, "message.failed", 0)
    answers = {e["data"]["command_id"]: e for e in failed}
    assert {e["data"]["code"] for e in failed} == {"invalid_command"}
    assert set(flood) <= set(answers)
    for bad in BAD_COMMANDS:
        if bad.answer_id is None:
            assert bad.absent not in answers, bad.name
            continue
        answer = answers.get(bad.answer_id)
        assert answer is not None, bad.name
        assert answer["instance"] == "acme", bad.name  # the subject's instance, not the body's
        assert bad.why in answer["data"]["reason"], (bad.name, answer["data"]["reason"])
    expected = FLOOD + sum(1 for bad in BAD_COMMANDS if bad.answer_id is not None)
    assert len(failed) == expected
    assert invalid_commands_counted() - counted == FLOOD + len(BAD_COMMANDS)

    # records: a usable id of a refused send is recorded failed; no unusable id reached the bucket
    ledger = SendLedger(nc.jetstream(), topology)
    refused = await ledger.get("acme", "body-1")
    assert refused is not None
    assert (refused.state, refused.error_code) == (SendState.FAILED, "invalid_command")
    stored = await (await nc.jetstream().key_value(topology.sends_bucket)).keys()
    recorded = ["body-1", "body-2", "body-3", "inst-1", "type-1", "env-1", "json-1", "array-1",
                "hdr-1", "deep-1", "order.42"]  # fmt: skip
    assert sorted(stored) == sorted([*(f"acme.{c}" for c in recorded), "beta.after-flood"])
    assert len((await cs.sim(nc, topology, "acme", "sent"))["sent"]) == 1  # order.42 only


async def _events(nc: NATS, topology: Any, event_type: str, at_least: int) -> Any:
    found = await cs.events_of(nc, topology, event_type)
    return found if len(found) >= at_least else None


async def test_a_command_that_keeps_failing_stops_at_the_bound(
    settings: Settings, nc: NATS
) -> None:
    """An unreadable send record makes every delivery of its command crash: after the bound
    (3 here) it is answered `redelivery_exhausted` and acked, and the instance's next command
    goes out. The consumer an older connector made (no bound) is given the bound."""
    settings = settings.model_copy(update={"port": free_port(), "command_max_deliver": 3})
    topology = settings.topology
    js = nc.jetstream()
    await ensure_streams(js, settings)
    await js.add_consumer(
        topology.commands_stream,
        ConsumerConfig(durable_name="connector", filter_subject=topology.all_commands,
                       ack_policy=AckPolicy.EXPLICIT, ack_wait=30, max_ack_pending=1024),
    )  # fmt: skip
    old = await js.consumer_info(topology.commands_stream, "connector")
    assert old.config.max_deliver in (None, -1)
    async with cs.connector_running(settings, nc):
        await cs.create_instance(nc, topology, "acme")
        await eventually(lambda: cs.state_is(nc, topology, "acme", "open"))
        info = await js.consumer_info(topology.commands_stream, "connector")
        assert info.config.max_deliver == 3
        sends = await js.key_value(topology.sends_bucket)
        await sends.put("acme.stuck-1", b"not a record")
        await cs.publish_command(nc, topology, "acme", "stuck-1", SEND_BODY)

        [failed] = await eventually(lambda: _events(nc, topology, "message.failed", 1), timeout=30)
        data = failed["data"]
        assert (data["command_id"], data["code"], data["retryable"]) == (
            "stuck-1", "redelivery_exhausted", True,
        )  # fmt: skip
        assert "3 deliveries" in data["reason"]
        assert "ValidationError" in data["reason"]
        record = await SendLedger(js, topology).get("acme", "stuck-1")
        assert record is not None
        assert (record.state, record.error_code) == (SendState.FAILED, "redelivery_exhausted")
        await eventually(lambda: consumer_idle(nc, settings))
        # positive control: the same instance's next command is carried out
        await cs.publish_command(nc, topology, "acme", "fine-1", SEND_BODY)
        [sent] = await eventually(lambda: _events(nc, topology, "message.sent", 1))
        assert sent["data"]["command_id"] == "fine-1"
        assert len((await cs.sim(nc, topology, "acme", "sent"))["sent"]) == 1
