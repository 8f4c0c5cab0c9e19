"""Queries over NATS (`<prefix>.req.<instance>.<query>`) answered by the connector on the sim
engine, the events they cause, presence of subscribed contacts, calls rejected by policy, and LID
senders carrying their phone JID. A real nats-server; the connector runs in this process."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from PIL import Image

from connector.engines.sim import SIM_JID
from schemas.instances import CallPolicy
from schemas.queries import QueryAnswer
from tests import connector_support as cs
from tests.support import eventually
from wabus.settings import Settings

ANA, BO, CY = "5511911110001", "5511911110002", "5511911110003"
ANA_LID = "99887766554433@lid"


async def ask(
    nc: NATS, settings: Settings, name: str, body: Any, instance: str = "acme"
) -> QueryAnswer:
    reply = await nc.request(
        settings.topology.query(instance, name), json.dumps(body).encode(), timeout=10
    )
    return QueryAnswer.model_validate_json(reply.data)


async def ok(nc: NATS, settings: Settings, name: str, body: Any) -> dict[str, Any]:
    answer = await ask(nc, settings, name, body)
    assert answer.ok, answer
    assert answer.data is not None
    return answer.data


async def refused(nc: NATS, settings: Settings, name: str, body: Any) -> str | None:
    answer = await ask(nc, settings, name, body)
    assert not answer.ok
    assert answer.reason
    return answer.code


async def events(nc: NATS, settings: Settings, event_type: str, count: int) -> list[dict[str, Any]]:
    async def enough() -> list[dict[str, Any]] | None:
        found = await cs.events_of(nc, settings.topology, event_type)
        return found if len(found) >= count else None

    found: list[dict[str, Any]] = await eventually(enough, timeout=10)
    return found


@pytest.fixture
async def acme(settings: Settings, nc: NATS) -> Any:
    policy = CallPolicy(reject=True, message="I can't take calls here: please write.")
    async with cs.connector_running(settings, nc):
        await cs.create_instance(nc, settings.topology, "acme", calls=policy)
        await eventually(lambda: cs.state_is(nc, settings.topology, "acme", "open"), timeout=10)
        contacts = [
            {"phone": ANA, "lid": ANA_LID, "name": "Ana Co", "about": "hi", "business": True},
            {"phone": BO},
            {"phone": CY},
        ]
        assert (await cs.sim(nc, settings.topology, "acme", "contacts", {"contacts": contacts}))[
            "ok"
        ]
        yield


async def test_contacts_numbers_profiles_lids_blocks(
    acme: None, nc: NATS, settings: Settings
) -> None:
    checked = await ok(nc, settings, "contacts_check", {"phones": [f"+{ANA}", "5511900000000"]})
    assert checked["numbers"] == [
        {"phone": ANA, "on_whatsapp": True, "jid": f"{ANA}@s.whatsapp.net"},
        {"phone": "5511900000000", "on_whatsapp": False, "jid": None},
    ]
    profile = await ok(nc, settings, "contact_profile", {"jid": ANA})
    assert (profile["name"], profile["lid"], profile["business"]) == ("Ana Co", ANA_LID, True)
    both_ways = [
        await ok(nc, settings, "lid_resolve", {"jid": ANA_LID}),
        await ok(nc, settings, "lid_resolve", {"jid": ANA}),
    ]
    for mapping in both_ways:
        assert (mapping["phone_jid"], mapping["lid"], mapping["known"]) == (
            f"{ANA}@s.whatsapp.net",
            ANA_LID,
            True,
        )
    unknown = await ok(nc, settings, "lid_resolve", {"jid": "11112222333@lid"})
    assert (unknown["known"], unknown["phone_jid"]) == (False, None)
    assert await refused(nc, settings, "contact_profile", {"jid": "5511900000000"}) == (
        "not_on_whatsapp"
    )
    assert await ok(nc, settings, "contact_block", {"jid": BO}) == {"done": True}
    activity = await cs.sim(nc, settings.topology, "acme", "activity")
    assert activity["blocked"] == [f"{BO}@s.whatsapp.net"]


async def test_bad_queries_are_answered_with_their_code(
    acme: None, nc: NATS, settings: Settings
) -> None:
    assert await refused(nc, settings, "teleport", {}) == "unknown_query"
    assert await refused(nc, settings, "contacts_check", {"phones": []}) == "invalid_query"
    assert await refused(nc, settings, "group_info", {"group": "not-a-group"}) == "invalid_query"
    assert await refused(nc, settings, "group_info", {"group": "120363999@g.us"}) == (
        "unknown_group"
    )
    # an instance nobody runs: no answer at all, never a wrong one
    with pytest.raises((NoRespondersError, NatsTimeoutError)):
        await nc.request(settings.topology.query("nobody", "groups_list"), b"{}", timeout=1)


async def test_an_instance_that_is_not_open_says_so(
    acme: None, nc: NATS, settings: Settings
) -> None:
    assert (await ok(nc, settings, "groups_list", {}))["groups"] == []  # the positive control
    await cs.sim(nc, settings.topology, "acme", "logout")
    await eventually(lambda: cs.state_is(nc, settings.topology, "acme", "logged_out"), timeout=10)
    assert await refused(nc, settings, "groups_list", {}) == "instance_not_open"


async def test_groups_from_creation_to_leaving(acme: None, nc: NATS, settings: Settings) -> None:
    created = await ok(nc, settings, "group_create", {"name": "Team", "participants": [ANA, BO]})
    group = created["jid"]
    assert [p["jid"] for p in created["participants"]][1:] == [
        f"{ANA}@s.whatsapp.net",
        f"{BO}@s.whatsapp.net",
    ]
    assert created["participants"][0]["super_admin"] is True
    changed = await ok(
        nc,
        settings,
        "group_participants",
        {"group": group, "action": "add", "participants": [CY, ANA, "5511900000000"]},
    )
    assert [(r["ok"], r["error"]) for r in changed["results"]] == [
        (True, None),
        (False, "409"),
        (False, "404"),
    ]
    await ok(nc, settings, "group_participants", {"group": group, "action": "promote",
                                                   "participants": [ANA]})  # fmt: skip
    info = await ok(nc, settings, "group_info", {"group": group})
    admins = {p["jid"] for p in info["participants"] if p["admin"]}
    assert f"{ANA}@s.whatsapp.net" in admins
    await ok(nc, settings, "group_settings", {"group": group, "name": "Team 2", "announce": True})
    link = (await ok(nc, settings, "group_invite", {"group": group}))["link"]
    revoked = (await ok(nc, settings, "group_invite", {"group": group, "revoke": True}))["link"]
    assert link != revoked
    assert await refused(nc, settings, "group_join", {"link": link}) == "invalid_invite"
    await ok(nc, settings, "group_leave", {"group": group})
    assert await refused(nc, settings, "group_info", {"group": group}) == "unknown_group"
    assert (await ok(nc, settings, "group_join", {"link": revoked}))["group"] == group

    participants = await events(nc, settings, "group.participants", 2)
    assert [(e["data"]["action"], e["data"]["participants"]) for e in participants] == [
        ("add", [f"{CY}@s.whatsapp.net"]),
        ("promote", [f"{ANA}@s.whatsapp.net"]),
    ]
    settings_changed = (await events(nc, settings, "group.settings", 1))[0]["data"]
    assert (settings_changed["name"], settings_changed["announce"]) == ("Team 2", True)
    assert settings_changed["locked"] is None  # only what changed
    assert [e["data"]["group"] for e in await events(nc, settings, "group.joined", 2)] == [
        group,
        group,
    ]
    assert (await events(nc, settings, "group.left", 1))[0]["data"]["group"] == group


async def test_someone_elses_group_needs_admin_rights(
    acme: None, nc: NATS, settings: Settings
) -> None:
    made = await cs.sim(
        nc, settings.topology, "acme", "group",
        {"name": "Theirs", "owner": ANA, "participants": [ANA, BO], "admins": [ANA]},
    )  # fmt: skip
    group = made["group"]
    info = await ok(nc, settings, "group_info", {"group": group})
    assert info["owner"] == f"{ANA}@s.whatsapp.net"
    change = {"group": group, "action": "remove", "participants": [BO]}
    assert await refused(nc, settings, "group_participants", change) == "not_group_admin"
    assert await refused(nc, settings, "group_settings", {"group": group, "name": "x"}) == (
        "not_group_admin"
    )


async def test_a_group_photo_in_any_common_format_reaches_whatsapp_as_a_jpeg(
    acme: None, nc: NATS, settings: Settings
) -> None:
    """The sim, like WhatsApp, takes only a JPEG group photo: a PNG goes through because the
    connector converts it; bytes that are no image are refused as the caller's mistake."""
    group = (await ok(nc, settings, "group_create", {"name": "Pics", "participants": [ANA]}))["jid"]
    for fmt in ("JPEG", "PNG", "WEBP"):
        out = io.BytesIO()
        Image.new("RGBA", (900, 700), (10, 120, 200, 128)).convert(
            "RGB" if fmt == "JPEG" else "RGBA"
        ).save(out, fmt)
        photo = base64.b64encode(out.getvalue()).decode()
        await ok(nc, settings, "group_settings", {"group": group, "photo_base64": photo})
    broken = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64).decode()
    change = {"group": group, "photo_base64": broken}
    assert await refused(nc, settings, "group_settings", change) == "invalid_query"


async def test_presence_of_subscribed_contacts_only(
    acme: None, nc: NATS, settings: Settings
) -> None:
    await cs.sim(nc, settings.topology, "acme", "presence", {"jid": BO, "online": True})
    await ok(nc, settings, "presence_subscribe", {"jid": ANA})
    seen = "2026-11-29T10:00:00Z"
    await cs.sim(nc, settings.topology, "acme", "presence",
                 {"jid": ANA, "online": False, "last_seen": seen})  # fmt: skip
    update = (await events(nc, settings, "presence.update", 1))[0]["data"]
    assert (update["jid"], update["online"]) == (f"{ANA}@s.whatsapp.net", False)
    assert update["last_seen"].startswith("2026-11-29T10:00:00")
    assert len(await cs.events_of(nc, settings.topology, "presence.update")) == 1  # not Bo's


async def test_calls_are_rejected_by_policy_and_answered(
    acme: None, nc: NATS, settings: Settings
) -> None:
    await cs.sim(nc, settings.topology, "acme", "call", {"from": ANA, "call_id": "CALL1"})
    offer = (await events(nc, settings, "call.offer", 1))[0]["data"]
    assert (offer["call_id"], offer["from"], offer["rejected"]) == (
        "CALL1",
        f"{ANA}@s.whatsapp.net",
        True,
    )
    ended = (await events(nc, settings, "call.ended", 1))[0]["data"]
    assert (ended["call_id"], ended["reason"]) == ("CALL1", "rejected")
    activity = await cs.sim(nc, settings.topology, "acme", "activity")
    assert activity["rejected_calls"] == ["CALL1"]
    sent = (await cs.sim(nc, settings.topology, "acme", "sent"))["sent"]
    assert [(s["data"]["to"], s["data"]["text"]) for s in sent] == [
        (f"{ANA}@s.whatsapp.net", "I can't take calls here: please write.")
    ]


async def test_calls_ring_on_without_a_policy(settings: Settings, nc: NATS) -> None:
    async with cs.connector_running(settings, nc):
        await cs.create_instance(nc, settings.topology, "acme")
        await eventually(lambda: cs.state_is(nc, settings.topology, "acme", "open"), timeout=10)
        await cs.sim(nc, settings.topology, "acme", "call", {"from": ANA, "call_id": "CALL2"})
        offer = (await events(nc, settings, "call.offer", 1))[0]["data"]
        assert offer["rejected"] is False
        assert (await cs.sim(nc, settings.topology, "acme", "activity"))["rejected_calls"] == []


async def test_a_lid_sender_carries_its_phone_jid_when_known(
    acme: None, nc: NATS, settings: Settings
) -> None:
    for sender, message_id in ((ANA_LID, "L1"), ("11112222333@lid", "L2"), (ANA, "L3")):
        await cs.sim(nc, settings.topology, "acme", "inbound",
                     {"from": sender, "id": message_id, "text": "hi"})  # fmt: skip
    received = {
        e["data"]["message_id"]: e["data"]
        for e in await events(nc, settings, "message.received", 3)
    }
    assert received["L1"]["from_alt"] == f"{ANA}@s.whatsapp.net"
    assert received["L2"]["from_alt"] is None  # unknown mapping: said so, not guessed
    assert received["L3"]["from_alt"] == ANA_LID


async def test_a_send_that_mentions_everyone_names_each_participant(
    acme: None, nc: NATS, settings: Settings
) -> None:
    group = (await ok(nc, settings, "group_create", {"name": "All", "participants": [ANA, BO]}))[
        "jid"
    ]
    data = {"to": group, "text": "meeting now", "mention_all": True}
    await cs.publish_command(nc, settings.topology, "acme", "all-1", data)

    async def sent() -> list[dict[str, Any]]:
        return list((await cs.sim(nc, settings.topology, "acme", "sent"))["sent"])

    entry = (await eventually(sent, timeout=10))[0]
    # the group's creator (the sim account itself) is a participant, not mentioned
    info = await ok(nc, settings, "group_info", {"group": group})
    assert SIM_JID in {participant["jid"] for participant in info["participants"]}
    assert entry["context"]["mentions"] == [f"{ANA}@s.whatsapp.net", f"{BO}@s.whatsapp.net"]
