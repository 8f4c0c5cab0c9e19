"""HTTP hygiene of the relay (security headers, request ids, CORS), the OpenAPI document and
docs page, and the Node design's legacy routes — against a real relay on a real nats-server."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from nats.aio.client import Client as NATS

from relay.app import create_app
from relay.routes import ENDPOINTS
from tests.relay_helpers import commands_stored, last_command, signed, write_status
from tests.support import running
from wabus.embedded import EmbeddedNats
from wabus.settings import Settings

ORIGIN = "https://admin.example.com"


@pytest.fixture
async def url(settings: Settings, nc: NATS) -> AsyncIterator[str]:
    with_cors = settings.model_copy(update={"cors_origins": [ORIGIN]})
    async with running(create_app(with_cors)) as base:
        yield base


async def get(url: str, headers: dict[str, str] | None = None) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.get(url, headers=headers)


async def test_security_headers_and_request_ids(url: str) -> None:
    response = await signed(url, "GET", "/v1/instances")
    assert response.status_code == 200
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-security-policy"].startswith("default-src 'none'")
    assert re.fullmatch(r"req_[0-9a-f]{16}", response.headers["x-request-id"])
    mine = await signed(url, "GET", "/v1/instances", headers={"X-Request-Id": "trace-123"})
    assert mine.headers["x-request-id"] == "trace-123"
    hostile = await signed(url, "GET", "/v1/nothing", headers={"X-Request-Id": "a b\tc"})
    assert hostile.headers["x-request-id"].startswith("req_")
    assert hostile.json()["request_id"] == hostile.headers["x-request-id"]
    assert (hostile.status_code, hostile.json()["code"]) == (404, "not_found")


async def test_cors_allow_list(url: str) -> None:
    preflight = {
        "Origin": ORIGIN,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "x-wabus-signature, x-wabus-key-id, content-type",
    }
    async with httpx.AsyncClient() as http:
        allowed = await http.options(url + "/v1/instances/acme/messages", headers=preflight)
        refused = await http.options(
            url + "/v1/instances/acme/messages", headers=preflight | {"Origin": "https://evil.io"}
        )
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers
    simple = await signed(url, "GET", "/v1/instances", headers={"Origin": ORIGIN})
    assert simple.headers["access-control-allow-origin"] == ORIGIN
    assert "x-request-id" in simple.headers["access-control-expose-headers"].lower()


async def test_no_cors_headers_without_an_allow_list(settings: Settings, nc: NATS) -> None:
    async with running(create_app(settings)) as base:
        response = await signed(base, "GET", "/v1/instances", headers={"Origin": ORIGIN})
    assert "access-control-allow-origin" not in response.headers


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


async def test_openapi_document_covers_every_endpoint(url: str) -> None:
    document = (await get(url + "/openapi.json")).json()
    assert document["openapi"] == "3.1.0"
    operations = {
        (method.upper(), path) for path, methods in document["paths"].items() for method in methods
    }
    assert operations == {(e.method, e.path) for e in ENDPOINTS}
    schemas = document["components"]["schemas"]
    for ref in _refs(document):
        assert ref.startswith("#/components/schemas/")
        assert ref.rsplit("/", 1)[1] in schemas, ref
    send = document["paths"]["/v1/instances/{instance}/messages"]["post"]
    body = schemas[send["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                   .rsplit("/", 1)[1]]  # fmt: skip
    kinds = {ref.rsplit("/", 1)[1] for ref in _refs(body)}
    assert {"SendText", "SendImage", "SendReaction"} <= kinds
    assert {"200", "202", "401", "403", "404", "413", "422", "429"} <= set(send["responses"])
    assert document["paths"]["/api/send"]["post"]["deprecated"] is True


async def test_docs_page_is_self_contained(url: str) -> None:
    page = await get(url + "/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "connect-src 'self'" in page.headers["content-security-policy"]
    for asset in re.findall(r'(?:src|href)="([^"]+)"', page.text):
        assert asset.startswith("/"), f"the docs page must not load {asset} from elsewhere"
        assert (await get(url + asset)).status_code == 200
    script = (await get(url + "/docs/docs.js")).text
    assert "/openapi.json" in script
    assert "http://" not in script
    assert "https://" not in script


async def test_legacy_node_routes_map_onto_v1(url: str, nc: NATS, settings: Settings) -> None:
    assert (await get(url + "/health")).json() == {"status": "ok"}
    unsigned = await get(url + "/api/status/acme")
    assert (unsigned.status_code, unsigned.json()["code"]) == (401, "missing_signature")

    sent = await signed(
        url, "POST", "/api/send", {"instanceId": "acme", "to": "5511999999999", "message": "hi"}
    )
    assert sent.status_code == 202
    assert sent.headers["deprecation"] == "true"
    assert sent.headers["link"] == '</v1/instances/acme/messages>; rel="successor-version"'
    command = await last_command(nc, settings, "acme", "send")
    assert command["id"] == sent.json()["command_id"]
    assert (command["data"]["to"], command["data"]["text"]) == ("5511999999999", "hi")

    bad = await signed(url, "POST", "/api/send", {"instanceId": "acme", "to": "x", "message": ""})
    assert (bad.status_code, bad.json()["code"]) == (422, "invalid_body")
    assert {e["field"] for e in bad.json()["errors"]} == {"to", "message"}
    assert await commands_stored(nc, settings) == 1

    await signed(url, "POST", "/v1/instances", {"id": "acme"})
    await write_status(nc, settings, "acme", state="qr", qr="2@qr-payload")
    status = await signed(url, "GET", "/api/status/acme")
    assert (status.status_code, status.json()["state"]) == (200, "qr")
    qr = await signed(url, "GET", "/api/qr/acme")
    assert (qr.json()["qr"], qr.headers["deprecation"]) == ("2@qr-payload", "true")


async def test_unsigned_routes_stay_open(url: str) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/health"):
        assert (await get(url + path)).status_code == 200, path


async def test_nats_going_away_answers_503_not_500(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("relay.jetstream.ACK_TIMEOUT_SECONDS", 0.5)
    server = EmbeddedNats(tmp_path / "own-nats").start()
    try:
        own = settings.model_copy(update={"nats_url": server.url})
        async with running(create_app(own)) as base:
            healthy = await signed(base, "POST", "/v1/instances/acme/presence",
                                   {"chat": "5511999999999", "state": "paused"})  # fmt: skip
            assert healthy.status_code == 202
            server.stop()
            down = await signed(base, "POST", "/v1/instances/acme/presence",
                                {"chat": "5511999999999", "state": "paused"})  # fmt: skip
            assert down.status_code == 503
            assert down.json()["code"] == "bus_unavailable"
            assert down.headers["retry-after"] == "1"
            assert "Traceback" not in down.text
    finally:
        server.stop()
