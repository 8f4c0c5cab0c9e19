"""The relay's middleware in one pass (`relay.middleware.edge`), in-process on fakes: the order
of its checks and of the headers it adds is the order the separate layers had."""

from __future__ import annotations

import time

import httpx

from relay.middleware.hygiene import SECURITY_HEADERS
from tests.conftest import API_KEY_ID
from tests.fakes import Fakes
from tests.relay_helpers import refused, relay_on, route_settings, signed_in_process

ORIGIN = "https://app.example.com"
SEND = "/v1/instances/acme/messages"
TEXT = {"to": "5511999999999", "text": "hi"}
PREFLIGHT = {
    "Origin": ORIGIN,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "x-wabus-signature, content-type",
}
SECURITY = [name.decode() for name, _ in SECURITY_HEADERS]


def names(response: httpx.Response) -> list[str]:
    return [name for name, _ in response.headers.multi_items() if name != "content-length"]


async def test_cors_headers_then_security_headers_then_the_request_id(fakes: Fakes) -> None:
    with_cors = route_settings(cors_origins=[ORIGIN])
    async with relay_on(fakes, with_cors) as relay:
        sent = await signed_in_process(relay, "POST", SEND, TEXT, headers={"Origin": ORIGIN})
        plain = await signed_in_process(relay, "POST", SEND, TEXT, headers={"X-Request-Id": "r-9"})
    assert sent.status_code == plain.status_code == 202
    cors = ["access-control-expose-headers", "access-control-allow-origin", "vary"]
    assert names(sent) == ["content-type", *cors, *SECURITY, "x-request-id"]
    assert sent.headers["access-control-allow-origin"] == ORIGIN
    # without an Origin CORS still says the answer varies by it, as Starlette's layer did
    assert names(plain) == ["content-type", "vary", *SECURITY, "x-request-id"]
    assert plain.headers["x-request-id"] == "r-9"


async def test_a_client_the_guard_refuses_still_gets_preflights_and_cors_on_its_429(
    fakes: Fakes,
) -> None:
    """CORS comes before the guard: a browser whose address failed too often is told why
    (a 429 it can read, Retry-After exposed), not a CORS failure."""
    guarded = route_settings(cors_origins=[ORIGIN], auth_failure_limit=2, auth_failure_window=900)
    bad = {
        "X-Wabus-Key-Id": API_KEY_ID,
        "X-Wabus-Timestamp": str(int(time.time())),
        "X-Wabus-Signature": "v2=" + "0" * 64,
        "Origin": ORIGIN,
    }
    async with relay_on(fakes, guarded) as relay:
        # positive control: before any failure, the same client is served
        assert (await relay.options(SEND, headers=PREFLIGHT)).status_code == 200
        for _ in range(2):
            refused(await relay.post(SEND, content=b"{}", headers=bad), 401, "invalid_signature")
        blocked = await signed_in_process(relay, "POST", SEND, TEXT, headers={"Origin": ORIGIN})
        preflight = await relay.options(SEND, headers=PREFLIGHT)
        probe = await relay.get("/healthz")
    refused(blocked, 429, "too_many_failed_requests")
    assert blocked.headers["access-control-allow-origin"] == ORIGIN
    assert "Retry-After" in blocked.headers["access-control-expose-headers"]
    assert blocked.json()["request_id"] == blocked.headers["x-request-id"]
    assert names(blocked)[-1] == "x-request-id"
    assert (preflight.status_code, preflight.headers["access-control-allow-origin"]) == (
        200,
        ORIGIN,
    )
    assert probe.status_code == 200
    assert fakes.commands.published == []
