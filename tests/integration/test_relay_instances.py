"""Instances, status, QR and media against a real relay on a real nats-server; the connector's
writes (status, media) are made by the test, as the connector would make them."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client as NATS
from standardwebhooks import Webhook

from relay.app import create_app
from relay.client import RelayClient, RelayError
from schemas.instances import InstanceConfig
from tests.conftest import API_KEY_ID, API_SECRET
from tests.relay_helpers import commands_stored, signed, store_media, write_status
from tests.support import running
from wabus.settings import Settings


@pytest.fixture
async def url(settings: Settings, nc: NATS) -> AsyncIterator[str]:
    async with running(create_app(settings)) as base:
        yield base


async def stored_config(nc: NATS, settings: Settings, instance: str) -> InstanceConfig:
    kv = await nc.jetstream().key_value(settings.topology.config_bucket)
    entry = await kv.get(instance)
    return InstanceConfig.model_validate_json(entry.value or b"")


async def test_create_writes_the_config_bucket_and_shows_secrets_once(
    url: str, nc: NATS, settings: Settings
) -> None:
    given = {
        "id": "acme",
        "webhooks": [
            {"url": "https://example.com/hook", "events": ["message.*"]},
            {"id": "audit", "url": "https://example.com/audit", "secret": "whsec_" + "A" * 40},
        ],
    }
    created = await signed(url, "POST", "/v1/instances", given)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["id"] == "acme"
    assert body["desired_state"] == "running"
    generated, audit = body["webhooks"]
    assert generated["secret"].startswith("whsec_")
    assert generated["events"] == ["message.*"]
    assert audit == {
        "id": "audit", "url": "https://example.com/audit", "events": ["*"],
        "secret": "whsec_" + "A" * 40,
    }  # fmt: skip
    Webhook(generated["secret"])  # a secret the official library accepts

    config = await stored_config(nc, settings, "acme")
    assert config.desired_state == "running"
    assert [(e.id, e.url, e.events, e.secret) for e in config.webhooks] == [
        (generated["id"], "https://example.com/hook", ["message.*"], generated["secret"]),
        ("audit", "https://example.com/audit", ["*"], "whsec_" + "A" * 40),
    ]

    shown = (await signed(url, "GET", "/v1/instances/acme")).json()
    assert [w["secret"] for w in shown["webhooks"]] == [None, None]
    assert shown["status"] is None
    listed = (await signed(url, "GET", "/v1/instances")).json()
    assert [i["id"] for i in listed["instances"]] == ["acme"]
    assert "whsec_" not in json.dumps(listed)


async def test_create_never_overwrites(url: str, nc: NATS, settings: Settings) -> None:
    assert (await signed(url, "POST", "/v1/instances", {"id": "acme"})).status_code == 201
    again = await signed(url, "POST", "/v1/instances", {"id": "acme", "desired_state": "stopped"})
    assert (again.status_code, again.json()["code"]) == (409, "instance_exists")
    assert (await stored_config(nc, settings, "acme")).desired_state == "running"


@pytest.mark.parametrize(
    ("payload", "code", "fields"),
    [
        ({"id": "Bad Id"}, "invalid_body", {"id"}),
        ({"id": "acme", "colour": "red"}, "invalid_body", {"colour"}),
        ({"id": "acme", "webhooks": [{"url": "ftp://x"}]}, "invalid_body", {"webhooks.0.url"}),
        (
            {"id": "acme", "webhooks": [{"url": "https://x.io", "events": ["Bad!"]}]},
            "invalid_body",
            {"webhooks.0.events"},
        ),
        (
            {"id": "acme", "webhooks": [{"url": "https://x.io", "secret": "plain"}]},
            "invalid_body",
            {"webhooks.0.secret"},
        ),
        (
            {"id": "acme", "webhooks": [{"url": "http://127.0.0.1/hook"}]},
            "webhook_url_blocked",
            None,
        ),
        (
            {"id": "acme", "webhooks": [{"id": "a", "url": "https://x.io"}] * 2},
            "duplicate_webhook_id",
            None,
        ),
    ],
)
async def test_create_refuses_bad_configurations(
    url: str,
    nc: NATS,
    settings: Settings,
    payload: dict[str, object],
    code: str,
    fields: set[str] | None,
) -> None:
    response = await signed(url, "POST", "/v1/instances", payload)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == code
    if fields is not None:
        assert {e["field"] for e in response.json()["errors"]} == fields
    kv = await nc.jetstream().key_value(settings.topology.config_bucket)
    assert await kv.status()
    assert (await kv.status()).values == 0


async def test_delete_removes_the_key_and_unknown_instances_are_404(
    url: str, nc: NATS, settings: Settings
) -> None:
    await signed(url, "POST", "/v1/instances", {"id": "acme"})
    deleted = await signed(url, "DELETE", "/v1/instances/acme")
    assert deleted.status_code == 204
    for method, target in [
        ("DELETE", "/v1/instances/acme"),
        ("GET", "/v1/instances/acme"),
        ("GET", "/v1/instances/acme/status"),
        ("GET", "/v1/instances/acme/qr"),
        ("GET", "/v1/instances/acme/qr.png"),
    ]:
        response = await signed(url, method, target)
        assert (response.status_code, response.json()["code"]) == (404, "unknown_instance")
    assert (await signed(url, "GET", "/v1/instances")).json() == {"instances": []}
    # a deleted id can be created again
    assert (await signed(url, "POST", "/v1/instances", {"id": "acme"})).status_code == 201


async def test_status_reads_what_the_connector_wrote(
    url: str, nc: NATS, settings: Settings
) -> None:
    await signed(url, "POST", "/v1/instances", {"id": "acme"})
    before = (await signed(url, "GET", "/v1/instances/acme/status")).json()
    assert (before["state"], before["reason_code"]) == ("connecting", "not_reported")
    await write_status(
        nc, settings, "acme", state="closed", reason_code="stream_error", reason="dropped",
        attempt=2, next_retry_at="2026-11-25T12:00:05.000Z", phone="5511999999999",
        push_name="Acme", jid="5511999999999@s.whatsapp.net",
    )  # fmt: skip
    status = (await signed(url, "GET", "/v1/instances/acme/status")).json()
    assert status["state"] == "closed"
    assert status["reason_code"] == "stream_error"
    assert status["next_retry_at"] == "2026-11-25T12:00:05.000Z"
    assert (status["phone"], status["push_name"]) == ("5511999999999", "Acme")
    whole = (await signed(url, "GET", "/v1/instances/acme")).json()
    assert whole["status"]["state"] == "closed"


async def test_qr_as_json_png_and_svg(url: str, nc: NATS, settings: Settings) -> None:
    await signed(url, "POST", "/v1/instances", {"id": "acme"})
    await write_status(nc, settings, "acme", state="open")
    refused = await signed(url, "GET", "/v1/instances/acme/qr")
    assert (refused.status_code, refused.json()["code"]) == (409, "qr_unavailable")
    assert "open" in refused.json()["detail"]

    payload = "2@abcdefghijklmnopqrstuvwxyz,0123456789,ABCDEFG=="
    await write_status(
        nc, settings, "acme", state="qr", qr=payload, qr_expires_at="2026-11-25T12:00:20.000Z",
        qr_refreshes=3,
    )  # fmt: skip
    qr = await signed(url, "GET", "/v1/instances/acme/qr")
    assert qr.json() == {
        "instance": "acme", "qr": payload, "expires_at": "2026-11-25T12:00:20.000Z",
        "refreshes": 3,
    }  # fmt: skip
    png = await signed(url, "GET", "/v1/instances/acme/qr.png?scale=4")
    assert png.headers["content-type"] == "image/png"
    assert png.content.startswith(b"\x89PNG\r\n\x1a\n")
    bigger = await signed(url, "GET", "/v1/instances/acme/qr.png?scale=8")
    assert len(bigger.content) > len(png.content)
    svg = await signed(url, "GET", "/v1/instances/acme/qr.svg")
    assert svg.headers["content-type"].startswith("image/svg+xml")
    assert svg.text.startswith("<svg")
    assert "path" in svg.text
    bad = await signed(url, "GET", "/v1/instances/acme/qr.png?scale=0")
    assert (bad.status_code, bad.json()["code"]) == (422, "invalid_query")
    assert await commands_stored(nc, settings) == 0


async def test_media_is_served_by_id_with_its_mimetype(
    url: str, nc: NATS, settings: Settings
) -> None:
    data = b"\xff\xd8\xff\xe0 a jpeg, honestly"
    media_id = "med_" + hashlib.sha256(data).hexdigest()[:32]
    missing = await signed(url, "GET", f"/v1/instances/acme/media/{media_id}")
    assert (missing.status_code, missing.json()["code"]) == (404, "unknown_media")
    await store_media(nc, settings, media_id, data, "image/jpeg")
    found = await signed(url, "GET", f"/v1/instances/acme/media/{media_id}")
    assert found.status_code == 200
    assert found.content == data
    assert found.headers["content-type"] == "image/jpeg"
    assert found.headers["content-disposition"] == f'attachment; filename="{media_id}"'
    for bad in ("med_0123", "nothing", media_id.upper(), media_id + "0"):
        response = await signed(url, "GET", f"/v1/instances/acme/media/{bad}")
        assert response.status_code == 404


async def test_update_state_and_manage_webhooks(url: str, nc: NATS, settings: Settings) -> None:
    async with RelayClient(url, API_KEY_ID, API_SECRET) as client:
        await client.create_instance("acme")
        stopped = await client.update_instance("acme", desired_state="stopped")
        assert stopped["desired_state"] == "stopped"
        assert (await stored_config(nc, settings, "acme")).desired_state == "stopped"

        added = await client.add_webhook(
            "acme", {"id": "crm", "url": "https://crm.example.com/wa", "events": ["message.*"]}
        )
        assert added["secret"].startswith("whsec_")
        config = await stored_config(nc, settings, "acme")
        assert [(e.id, e.secret) for e in config.webhooks] == [("crm", added["secret"])]
        shown = await client.get_instance("acme")
        assert shown["webhooks"] == [
            {"id": "crm", "url": "https://crm.example.com/wa", "events": ["message.*"],
             "secret": None}
        ]  # fmt: skip
        with pytest.raises(RelayError) as duplicate:
            await client.add_webhook("acme", {"id": "crm", "url": "https://x.example.com"})
        assert (duplicate.value.status, duplicate.value.code) == (409, "duplicate_webhook_id")

        await client.delete_webhook("acme", "crm")
        assert (await stored_config(nc, settings, "acme")).webhooks == []
        with pytest.raises(RelayError) as missing:
            await client.delete_webhook("acme", "crm")
        assert (missing.value.status, missing.value.code) == (404, "unknown_webhook")
        with pytest.raises(RelayError) as bad:
            await client.update_instance("acme", desired_state="paused")
        assert bad.value.code == "invalid_body"
        with pytest.raises(RelayError) as unknown:
            await client.update_instance("nobody", desired_state="running")
        assert unknown.value.code == "unknown_instance"
