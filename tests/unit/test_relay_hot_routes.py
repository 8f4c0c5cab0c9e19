"""The hot path's router (`relay.middleware.hot`): the signed send is served ahead of
Starlette's router, with the same gate, the same problem answers and the same headers."""

from __future__ import annotations

import time

import httpx
import pytest
from nats.errors import TimeoutError as NatsTimeoutError

from relay.client import signed_headers
from tests.conftest import API_KEY_ID, API_SECRET
from tests.fakes import Fakes
from tests.relay_helpers import refused, relay_on, signed_in_process

SEND = "/v1/instances/acme/messages"
TEXT = {"to": "5511999999999", "text": "hi"}


async def test_a_send_is_answered_with_the_relay_headers(
    relay: httpx.AsyncClient, fakes: Fakes
) -> None:
    answer = await signed_in_process(relay, "POST", SEND, TEXT, headers={"X-Request-Id": "r-1"})
    assert answer.status_code == 202, answer.text
    assert answer.headers["x-request-id"] == "r-1"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.json()["command_id"] == fakes.commands.published[0].message_id


async def test_its_refusals_are_the_apps_problems(relay: httpx.AsyncClient, fakes: Fakes) -> None:
    refused(await signed_in_process(relay, "POST", SEND, {"to": "5511999999999"}), 422,
            "invalid_body")  # fmt: skip
    body = b"to=5511999999999"
    headers = signed_headers(API_KEY_ID, API_SECRET, "POST", SEND, body, time.time())
    answer = await relay.post(SEND, content=body, headers=headers | {"Content-Type": "text/plain"})
    refused(answer, 415, "unsupported_media_type")
    assert answer.json()["request_id"] == answer.headers["x-request-id"]
    fakes.commands.failure = NatsTimeoutError()
    refused(await signed_in_process(relay, "POST", SEND, TEXT), 503, "bus_unavailable")
    assert fakes.commands.published == []


async def test_other_methods_on_its_path_go_to_starlettes_router(
    relay: httpx.AsyncClient, fakes: Fakes
) -> None:
    answer = await relay.put(SEND, content=b"{}")
    assert answer.status_code == 404, answer.text  # as before the hot router: no PUT route
    assert fakes.commands.published == []


async def test_an_unexpected_error_is_raised_on_to_the_server(
    relay: httpx.AsyncClient, fakes: Fakes
) -> None:
    """As Starlette's server-error middleware does for any route (the test transport re-raises
    it here), so the server logs it too."""
    fakes.commands.failure = RuntimeError("a bug")
    with pytest.raises(RuntimeError, match="a bug"):
        await signed_in_process(relay, "POST", SEND, TEXT)


async def test_an_unexpected_error_is_a_500_problem_with_the_relay_headers(
    fakes: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hot send (served outside Starlette's layers) and a route through Starlette's
    server-error middleware answer alike: `internal_error`, no trace, the request id and the
    security headers on it. Positive control: the same requests answer 202 and 404 first."""

    async def broken(key: str) -> bytes | None:
        raise RuntimeError("a bug with a secret in it")

    unknown_send = "/v1/instances/acme/messages/cmd_0123456789abcdef01234567"
    async with relay_on(fakes, raise_app_exceptions=False) as relay:
        assert (await signed_in_process(relay, "POST", SEND, TEXT)).status_code == 202
        refused(await signed_in_process(relay, "GET", unknown_send), 404, "unknown_send")
        fakes.commands.failure = RuntimeError("a bug with a secret in it")
        monkeypatch.setattr(fakes.sends, "get", broken)
        for method, target, payload in (("POST", SEND, TEXT), ("GET", unknown_send, None)):
            answer = await signed_in_process(
                relay, method, target, payload, headers={"X-Request-Id": "r-500"}
            )
            refused(answer, 500, "internal_error")
            assert "secret" not in answer.text
            assert "Traceback" not in answer.text
            assert answer.headers["x-request-id"] == answer.json()["request_id"] == "r-500"
            assert answer.headers["x-content-type-options"] == "nosniff"
