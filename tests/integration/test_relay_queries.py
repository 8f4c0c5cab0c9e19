"""Query routes against a real relay on a real nats-server, with a tiny responder subscribed on the
query subjects in the test standing in for the connector: the NATS adapter end to end, the answer
or refusal it carries, and what the relay answers when no connector (or no answer) is there. The
`wabus check / groups / group` commands run as processes against the same relay."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from relay.app import create_app
from relay.client import RelayClient, RelayError
from relay.stores.queries import NatsQueries, NoResponders, QueryTimeout, UnreadableAnswer
from schemas.subjects import Topology
from tests.conftest import API_KEY_ID, API_SECRET
from tests.support import running
from wabus.settings import Settings

PHONE_JID = "5511999999999@s.whatsapp.net"
GROUP = "120363000000000000@g.us"
GROUP_INFO = {
    "jid": GROUP,
    "name": "Team",
    "participants": [{"jid": PHONE_JID, "admin": True}],
}

Answer = Callable[[str, dict[str, Any]], bytes | None]
"""What the responder answers to (query name, request): the reply's bytes, or None for none."""


class Responder:
    """A stand-in connector for instance `acme`: every query it gets, answered by `answer`."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.asked: list[tuple[str, dict[str, Any]]] = []

    async def handle(self, msg: Msg) -> None:
        name = msg.subject.rsplit(".", 1)[1]
        request = json.loads(msg.data)
        self.asked.append((name, request))
        reply = self.answer(name, request)
        if reply is not None:
            await msg.respond(reply)


def ok(data: dict[str, Any]) -> bytes:
    return json.dumps({"ok": True, "data": data}).encode()


def connector(name: str, request: dict[str, Any]) -> bytes | None:
    """A connector that knows one account, 5511999999999, and is in one group."""
    if name == "contacts_check":
        return ok(
            {
                "numbers": [
                    {"phone": phone, "on_whatsapp": phone == "5511999999999",
                     "jid": PHONE_JID if phone == "5511999999999" else None}
                    for phone in request["phones"]
                ]
            }
        )  # fmt: skip
    if name == "groups_list":
        return ok({"groups": [GROUP_INFO]})
    if name == "group_info" and request["group"] == GROUP:
        return ok(GROUP_INFO)
    if name == "group_info":
        return json.dumps({"ok": False, "code": "unknown_group", "reason": "not in it"}).encode()
    if name == "contact_profile":
        return b"this is not json"
    return None  # anything else: taken, never answered


@pytest.fixture
async def url(settings: Settings, nc: NATS) -> AsyncIterator[str]:
    async with running(create_app(settings.model_copy(update={"query_timeout": 0.5}))) as base:
        yield base


@pytest.fixture
async def client(url: str) -> AsyncIterator[RelayClient]:
    async with RelayClient(url, API_KEY_ID, API_SECRET) as relay:
        yield relay


@pytest.fixture
async def responder(nc: NATS, settings: Settings, client: RelayClient) -> AsyncIterator[Responder]:
    """The connector's side, for instance `acme` (configured to run: the relay asks only about
    such an instance)."""
    await client.create_instance("acme")
    answering = Responder(connector)
    subscription: Subscription = await nc.subscribe(
        settings.topology.query("acme", "*"), cb=answering.handle
    )
    await nc.flush()
    yield answering
    await subscription.unsubscribe()


async def test_a_query_reaches_the_connector_and_its_answer_comes_back(
    client: RelayClient, responder: Responder
) -> None:
    numbers = await client.check_numbers("acme", ["+55 11 99999-9999", "5511888888888"])
    assert numbers == [
        {"phone": "5511999999999", "on_whatsapp": True, "jid": PHONE_JID},
        {"phone": "5511888888888", "on_whatsapp": False, "jid": None},
    ]
    assert await client.group("acme", GROUP) == {
        "jid": GROUP,
        "name": "Team",
        "description": None,
        "owner": None,
        "created_at": None,
        "announce": False,
        "locked": False,
        "participants": [
            {"jid": PHONE_JID, "phone_jid": None, "admin": True, "super_admin": False}
        ],
    }
    assert [group["jid"] for group in await client.groups("acme")] == [GROUP]
    assert responder.asked == [
        ("contacts_check", {"phones": ["5511999999999", "5511888888888"]}),
        ("group_info", {"group": GROUP}),
        ("groups_list", {}),
    ]


async def test_the_connectors_refusals_and_garbage_are_problems(
    client: RelayClient, responder: Responder
) -> None:
    with pytest.raises(RelayError) as refused:
        await client.group("acme", "120363999999999999@g.us")
    assert (refused.value.status, refused.value.code, refused.value.detail) == (
        404,
        "unknown_group",
        "not in it",
    )
    with pytest.raises(RelayError) as garbage:
        await client.contact("acme", PHONE_JID)
    assert (garbage.value.status, garbage.value.code) == (502, "connector_error")


async def test_a_connector_that_does_not_answer_is_504_connector_timeout(
    client: RelayClient, responder: Responder
) -> None:
    with pytest.raises(RelayError) as silent:
        await client.block("acme", PHONE_JID)
    assert (silent.value.status, silent.value.code) == (504, "connector_timeout")
    assert responder.asked == [("contact_block", {"jid": PHONE_JID, "block": True})]


async def test_with_no_connector_the_route_answers_504_connector_unavailable(
    client: RelayClient,
) -> None:
    with pytest.raises(RelayError) as unknown:
        await client.groups("acme")
    assert (unknown.value.status, unknown.value.code) == (404, "unknown_instance")
    await client.create_instance("acme")
    with pytest.raises(RelayError) as missing:
        await client.groups("acme")
    assert (missing.value.status, missing.value.code) == (504, "connector_unavailable")
    await client.update_instance("acme", desired_state="stopped")
    with pytest.raises(RelayError) as stopped:
        await client.groups("acme")
    assert (stopped.value.status, stopped.value.code) == (409, "instance_not_open")


async def test_the_nats_adapter_on_its_own(nc: NATS, prefix: str) -> None:
    topology = Topology(prefix)
    queries = NatsQueries(nc, topology)
    with pytest.raises(NoResponders):
        await queries.ask("acme", "groups_list", {}, 5)

    async def answer(msg: Msg) -> None:
        request = json.loads(msg.data)
        if request.get("garbage"):
            await msg.respond(b'{"ok": "perhaps"}')
        elif not request.get("silent"):
            await msg.respond(json.dumps({"ok": False, "code": "engine_error"}).encode())

    subscription = await nc.subscribe(topology.query("acme", "groups_list"), cb=answer)
    await nc.flush()
    try:
        refusal = await queries.ask("acme", "groups_list", {}, 5)
        assert (refusal.ok, refusal.code, refusal.data) == (False, "engine_error", None)
        with pytest.raises(UnreadableAnswer):
            await queries.ask("acme", "groups_list", {"garbage": True}, 5)
        with pytest.raises(QueryTimeout):
            await queries.ask("acme", "groups_list", {"silent": True}, 0.2)
    finally:
        await subscription.unsubscribe()


async def wabus(url: str, tmp_path: Path, *args: str) -> tuple[int, str, str]:
    env = os.environ | {
        "WABUS_RELAY_URL": url,
        "WABUS_API_KEYS": f"{API_KEY_ID}:{API_SECRET}",
        "WABUS_DATA_DIR": str(tmp_path / "cli"),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from wabus_cli.main import main; main()", *args,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    return process.returncode or 0, out.decode(), err.decode()


async def test_the_cli_checks_numbers_and_shows_groups(
    url: str, responder: Responder, tmp_path: Path
) -> None:
    code, out, _ = await wabus(url, tmp_path, "check", "acme", "5511999999999", "5511888888888")
    assert code == 0
    assert out.splitlines() == [
        f"5511999999999\ton WhatsApp\t{PHONE_JID}",
        "5511888888888\tnot on WhatsApp",
    ]
    code, out, _ = await wabus(url, tmp_path, "groups", "acme")
    assert (code, out.splitlines()) == (0, [f"{GROUP}\tTeam\t1 participants"])
    code, out, _ = await wabus(url, tmp_path, "group", "acme", GROUP)
    assert (code, json.loads(out)["name"]) == (0, "Team")

    code, out, err = await wabus(url, tmp_path, "group", "acme", "120363999999999999@g.us")
    assert (code, out) == (1, "")
    assert "unknown_group" in err
    assert "Traceback" not in err


async def test_the_cli_says_in_one_line_why_a_query_failed(
    url: str, client: RelayClient, tmp_path: Path
) -> None:
    await client.create_instance("acme")
    code, out, err = await wabus(url, tmp_path, "groups", "acme")
    assert (code, out) == (1, "")
    assert "504" in err
    assert "connector_unavailable" in err
    code, _, err = await wabus(url, tmp_path, "check", "acme", "not-a-number")
    assert code == 1
    assert "invalid_body" in err
    assert "Traceback" not in err
