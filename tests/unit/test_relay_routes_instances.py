"""Instances (create, list, get, update, delete, webhooks), per-key quotas, status, QR and media,
in-process on fakes: the real `create_app`, the stores in memory."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import pytest

from relay.stores.ports import Media
from schemas.envelope import utc_now
from schemas.instances import InstanceConfig, InstanceStatus
from tests.fakes import FakeInstanceStore, Fakes
from tests.relay_helpers import (
    TENANT,
    TENANT_SECRET,
    refused,
    relay_on,
    route_settings,
    signed_in_process,
)

AS_TENANT: dict[str, Any] = {"key_id": TENANT, "secret": TENANT_SECRET}


def stored(fakes: Fakes, instance: str) -> InstanceConfig:
    entry = fakes.instances.stored[instance]
    return InstanceConfig.model_validate_json(entry.value)


def connector_reports(fakes: Fakes, instance: str, **fields: Any) -> None:
    """Write an instance status as the connector would."""
    status = InstanceStatus(instance=instance, updated_at=utc_now(), **fields)
    fakes.status.values[instance] = status.model_dump_json().encode()


async def create(relay: httpx.AsyncClient, body: dict[str, Any], **as_key: Any) -> httpx.Response:
    return await signed_in_process(relay, "POST", "/v1/instances", body, **as_key)


async def test_create_stores_the_config_and_shows_secrets_once(
    relay: httpx.AsyncClient, fakes: Fakes
) -> None:
    given = {
        "id": "acme",
        "webhooks": [
            {"url": "https://example.com/hook", "events": ["message.*"]},
            {"id": "audit", "url": "https://example.com/audit", "secret": "whsec_" + "A" * 40},
        ],
    }
    created = await create(relay, given)
    assert created.status_code == 201, created.text
    generated, audit = created.json()["webhooks"]
    assert generated["secret"].startswith("whsec_")
    assert audit["secret"] == "whsec_" + "A" * 40
    config = stored(fakes, "acme")
    assert config.desired_state == "running"
    assert [(e.id, e.secret) for e in config.webhooks] == [
        (generated["id"], generated["secret"]),
        ("audit", "whsec_" + "A" * 40),
    ]
    shown = (await signed_in_process(relay, "GET", "/v1/instances/acme")).json()
    assert [w["secret"] for w in shown["webhooks"]] == [None, None]
    assert shown["status"] is None


async def test_create_never_overwrites(relay: httpx.AsyncClient, fakes: Fakes) -> None:
    assert (await create(relay, {"id": "acme"})).status_code == 201
    refused(await create(relay, {"id": "acme", "desired_state": "stopped"}), 409, "instance_exists")
    assert stored(fakes, "acme").desired_state == "running"


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({"id": "Bad Id"}, "invalid_body"),
        ({"id": "acme", "colour": "red"}, "invalid_body"),
        ({"id": "acme", "webhooks": [{"url": "http://127.0.0.1/hook"}]}, "webhook_url_blocked"),
        (
            {"id": "acme", "webhooks": [{"id": "a", "url": "https://x.io"}] * 2},
            "duplicate_webhook_id",
        ),
    ],
)
async def test_create_refuses_bad_configurations(
    relay: httpx.AsyncClient, fakes: Fakes, payload: dict[str, Any], code: str
) -> None:
    refused(await create(relay, payload), 422, code)
    assert fakes.instances.stored == {}


async def test_list_shows_what_the_key_may_see_sorted_and_skips_unreadable_configs(
    relay: httpx.AsyncClient, fakes: Fakes
) -> None:
    for instance in ("zulu", "acme", "beta-1"):
        assert (await create(relay, {"id": instance})).status_code == 201
    fakes.instances.put("broken", b'{"not": "a config"}')
    listed = (await signed_in_process(relay, "GET", "/v1/instances")).json()
    assert [i["id"] for i in listed["instances"]] == ["acme", "beta-1", "zulu"]
    assert "whsec_" not in str(listed)
    mine = (await signed_in_process(relay, "GET", "/v1/instances", **AS_TENANT)).json()
    assert [i["id"] for i in mine["instances"]] == ["acme", "beta-1"]


async def test_the_call_policy_is_set_at_creation_and_changed_alone(
    relay: httpx.AsyncClient, fakes: Fakes
) -> None:
    policy = {"reject": True, "message": "Please write instead."}
    created = await create(relay, {"id": "acme", "calls": policy})
    assert created.json()["calls"] == policy
    assert stored(fakes, "acme").calls.reject is True
    ringing = await signed_in_process(
        relay, "PATCH", "/v1/instances/acme", {"calls": {"reject": False}}
    )
    assert ringing.json()["calls"] == {"reject": False, "message": None}
    assert stored(fakes, "acme").desired_state == "running"  # left as it was
    nothing = await signed_in_process(relay, "PATCH", "/v1/instances/acme", {})
    refused(nothing, 422, "invalid_body")


async def test_update_and_webhooks_write_over_the_revision_read(
    relay: httpx.AsyncClient, fakes: Fakes
) -> None:
    await create(relay, {"id": "acme"})
    before = fakes.instances.stored["acme"].revision
    stopped = await signed_in_process(
        relay, "PATCH", "/v1/instances/acme", {"desired_state": "stopped"}
    )
    assert stopped.json()["desired_state"] == "stopped"
    assert stored(fakes, "acme").desired_state == "stopped"
    assert fakes.instances.stored["acme"].revision > before

    hook = {"id": "crm", "url": "https://crm.example.com/wa", "events": ["message.*"]}
    added = await signed_in_process(relay, "POST", "/v1/instances/acme/webhooks", hook)
    assert added.status_code == 201
    assert [(e.id, e.secret) for e in stored(fakes, "acme").webhooks] == [
        ("crm", added.json()["secret"])
    ]
    again = await signed_in_process(relay, "POST", "/v1/instances/acme/webhooks", hook)
    refused(again, 409, "duplicate_webhook_id")
    gone = await signed_in_process(relay, "DELETE", "/v1/instances/acme/webhooks/crm")
    assert gone.status_code == 204
    assert stored(fakes, "acme").webhooks == []
    missing = await signed_in_process(relay, "DELETE", "/v1/instances/acme/webhooks/crm")
    refused(missing, 404, "unknown_webhook")


class ChangedMeanwhile(FakeInstanceStore):
    """Another writer updates every instance between the route's read and its write."""

    async def update(self, instance: str, value: bytes, revision: int) -> int:
        self.put(instance, self.stored[instance].value)
        return await super().update(instance, value, revision)

    async def delete(self, instance: str, revision: int) -> None:
        self.put(instance, self.stored[instance].value)
        await super().delete(instance, revision)


async def test_a_write_that_lost_to_another_is_409_instance_changed() -> None:
    fakes = Fakes(instances=ChangedMeanwhile())
    async with relay_on(fakes) as relay:
        assert (await create(relay, {"id": "acme"})).status_code == 201
        patch = {"desired_state": "stopped"}
        changed = await signed_in_process(relay, "PATCH", "/v1/instances/acme", patch)
        refused(changed, 409, "instance_changed")
        deleted = await signed_in_process(relay, "DELETE", "/v1/instances/acme")
        refused(deleted, 409, "instance_changed")
    assert stored(fakes, "acme").desired_state == "running"


async def test_delete_removes_the_instance_and_unknown_ones_are_404(
    relay: httpx.AsyncClient, fakes: Fakes
) -> None:
    await create(relay, {"id": "acme"})
    assert (await signed_in_process(relay, "DELETE", "/v1/instances/acme")).status_code == 204
    assert fakes.instances.stored == {}
    for method, target in [
        ("DELETE", "/v1/instances/acme"),
        ("GET", "/v1/instances/acme"),
        ("GET", "/v1/instances/acme/status"),
        ("GET", "/v1/instances/acme/qr"),
        ("PATCH", "/v1/instances/acme"),
    ]:
        body = {"desired_state": "stopped"} if method == "PATCH" else None
        refused(await signed_in_process(relay, method, target, body), 404, "unknown_instance")
    assert (await create(relay, {"id": "acme"})).status_code == 201  # created again


async def test_a_stored_config_that_does_not_validate_is_409_and_still_deletable(
    relay: httpx.AsyncClient, fakes: Fakes
) -> None:
    fakes.instances.put("acme", b'{"id": 42}')
    refused(
        await signed_in_process(relay, "GET", "/v1/instances/acme"), 409, "invalid_stored_config"
    )
    assert (await signed_in_process(relay, "DELETE", "/v1/instances/acme")).status_code == 204


async def test_a_scoped_key_holds_at_most_its_quota(fakes: Fakes) -> None:
    async with relay_on(fakes, route_settings(key_max_instances=2)) as relay:
        refused(await create(relay, {"id": "other"}, **AS_TENANT), 403, "instance_forbidden")
        assert (await create(relay, {"id": "acme"}, **AS_TENANT)).status_code == 201
        assert (await create(relay, {"id": "beta-1"}, **AS_TENANT)).status_code == 201
        refused(await create(relay, {"id": "beta-2"}, **AS_TENANT), 409, "quota_exceeded")
        assert (await create(relay, {"id": "ops"})).status_code == 201  # the operator: no quota
        delete = await signed_in_process(relay, "DELETE", "/v1/instances/beta-1", **AS_TENANT)
        assert delete.status_code == 204
        assert (await create(relay, {"id": "beta-2"}, **AS_TENANT)).status_code == 201
    assert set(fakes.instances.stored) == {"acme", "beta-2", "ops"}


class RivalWritesFirst(FakeInstanceStore):
    """Another replica's creation in the same scope lands just before each of ours."""

    async def create(self, instance: str, value: bytes) -> int:
        self.put(f"beta-rival{len(self.stored)}", value)
        return await super().create(instance, value)


async def test_a_creation_that_lost_a_race_for_the_last_place_is_withdrawn() -> None:
    fakes = Fakes(instances=RivalWritesFirst())
    async with relay_on(fakes, route_settings(key_max_instances=1)) as relay:
        refused(await create(relay, {"id": "beta-mine"}, **AS_TENANT), 409, "quota_exceeded")
    assert list(fakes.instances.stored) == ["beta-rival0"]


async def test_status_reads_what_the_connector_wrote(
    relay: httpx.AsyncClient, fakes: Fakes
) -> None:
    await create(relay, {"id": "acme"})
    before = (await signed_in_process(relay, "GET", "/v1/instances/acme/status")).json()
    assert (before["state"], before["reason_code"]) == ("connecting", "not_reported")
    connector_reports(fakes, "acme", state="closed", reason_code="stream_error", phone="551199")
    status = (await signed_in_process(relay, "GET", "/v1/instances/acme/status")).json()
    assert (status["state"], status["reason_code"], status["phone"]) == (
        "closed",
        "stream_error",
        "551199",
    )
    whole = (await signed_in_process(relay, "GET", "/v1/instances/acme")).json()
    assert whole["status"]["state"] == "closed"
    fakes.status.values["acme"] = b"not json"  # unreadable: logged, treated as not reported
    unreadable = (await signed_in_process(relay, "GET", "/v1/instances/acme/status")).json()
    assert unreadable["reason_code"] == "not_reported"


async def test_a_stopped_instance_not_reported_yet_is_stopped(relay: httpx.AsyncClient) -> None:
    await create(relay, {"id": "acme", "desired_state": "stopped"})
    status = (await signed_in_process(relay, "GET", "/v1/instances/acme/status")).json()
    assert status["state"] == "stopped"


async def test_qr_only_while_waiting_for_pairing_as_json_png_and_svg(
    relay: httpx.AsyncClient, fakes: Fakes
) -> None:
    await create(relay, {"id": "acme"})
    connector_reports(fakes, "acme", state="open", qr="2@left-over")  # not waiting: no QR
    refused(await signed_in_process(relay, "GET", "/v1/instances/acme/qr"), 409, "qr_unavailable")
    payload = "2@abcdefghijklmnopqrstuvwxyz,0123456789,ABCDEFG=="
    connector_reports(fakes, "acme", state="qr", qr=payload, qr_refreshes=3)
    qr = (await signed_in_process(relay, "GET", "/v1/instances/acme/qr")).json()
    assert (qr["qr"], qr["refreshes"]) == (payload, 3)
    png = await signed_in_process(relay, "GET", "/v1/instances/acme/qr.png?scale=4")
    assert png.headers["content-type"] == "image/png"
    assert png.content.startswith(b"\x89PNG\r\n\x1a\n")
    svg = await signed_in_process(relay, "GET", "/v1/instances/acme/qr.svg")
    assert svg.text.startswith("<svg")
    legacy = await signed_in_process(relay, "GET", "/api/qr/acme")
    assert legacy.json() == qr
    assert legacy.headers["deprecation"] == "true"
    assert legacy.headers["link"] == '</v1/instances/acme/qr>; rel="successor-version"'
    legacy_status = await signed_in_process(relay, "GET", "/api/status/acme")
    assert legacy_status.json()["state"] == "qr"
    assert fakes.commands.published == []


async def test_media_is_served_by_id_with_a_checked_mimetype(
    relay: httpx.AsyncClient, fakes: Fakes
) -> None:
    data = b"\xff\xd8\xff\xe0 a jpeg, honestly"
    media_id = "med_" + hashlib.sha256(data).hexdigest()[:32]
    target = f"/v1/instances/acme/media/{media_id}"
    refused(await signed_in_process(relay, "GET", target), 404, "unknown_media")
    fakes.media.media[media_id] = Media(data, "image/jpeg")
    found = await signed_in_process(relay, "GET", target)
    assert (found.status_code, found.content) == (200, data)
    assert found.headers["content-type"] == "image/jpeg"
    assert found.headers["content-disposition"] == f'attachment; filename="{media_id}"'
    fakes.media.media[media_id] = Media(data, "text/html\r\nX-Evil: 1")
    odd = await signed_in_process(relay, "GET", target)
    assert odd.headers["content-type"] == "application/octet-stream"
    for bad in ("med_0123", media_id.upper()):
        refused(
            await signed_in_process(relay, "GET", f"/v1/instances/acme/media/{bad}"),
            404,
            "unknown_media",
        )
