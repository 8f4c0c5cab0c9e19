"""Schema-driven fuzzing of every route in the relay's own `/openapi.json`, against a real relay
on a real nats-server: no answer is a 5xx, and a refused request never reaches `WA_COMMANDS`.

Requests are signed correctly (so they get past authentication and exercise validation), some
with their signature corrupted. hypothesis drives a synchronous function, so the relay and the
NATS client run on an event loop in a background thread; each route gets a bounded budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

import httpx
import nats
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from relay.app import create_app
from relay.client import signed_headers
from relay.openapi import openapi_document
from relay.routes import ENDPOINTS
from schemas.ids import INSTANCE_ID_PATTERN
from tests.conftest import API_KEY_ID, API_SECRET
from tests.schema_strategies import ANY_JSON, from_schema, mutated
from tests.support import running
from wabus.settings import Settings

T = TypeVar("T")
DOCUMENT = openapi_document(ENDPOINTS, "test")
COMPONENTS = DOCUMENT["components"]["schemas"]
OPERATIONS = [
    (method.upper(), path, operation)
    for path, methods in DOCUMENT["paths"].items()
    for method, operation in methods.items()
]
EXAMPLES_PER_ROUTE = 30


@dataclass
class Relay:
    """A relay and a NATS client living on an event loop in a background thread."""

    url: str
    loop: asyncio.AbstractEventLoop
    settings: Settings
    count_commands: Callable[[], Awaitable[int]]

    def run(self, coroutine: Awaitable[T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)  # type: ignore[arg-type]


@pytest.fixture
def relay(settings: Settings) -> Iterator[Relay]:
    # `?wait=` may be drawn up to 120 s: keep the relay's cap short so fuzzing stays fast
    settings = settings.model_copy(update={"max_wait_seconds": 0.2})
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    ready: asyncio.Future[Relay] = asyncio.Future(loop=loop)
    stop = asyncio.Event()

    async def serve() -> None:
        client = await nats.connect(settings.nats_url or "")
        js = client.jetstream()

        async def count() -> int:
            info = await js.stream_info(settings.topology.commands_stream)
            return int(info.state.messages)

        try:
            async with running(create_app(settings)) as url:
                ready.set_result(Relay(url, loop, settings, count))
                await stop.wait()
        finally:
            for stream in (
                settings.topology.events_stream,
                settings.topology.commands_stream,
                settings.topology.dlq_stream,
                *(f"KV_{b}" for b in (
                    settings.topology.replay_bucket, settings.topology.config_bucket,
                    settings.topology.status_bucket, settings.topology.sends_bucket,
                )),
            ):  # fmt: skip
                with contextlib.suppress(Exception):
                    await js.delete_stream(stream)
            await client.close()

    serving = asyncio.run_coroutine_threadsafe(serve(), loop)
    started = asyncio.run_coroutine_threadsafe(asyncio.wait_for(_result(ready), 20), loop)
    yield started.result(30)
    loop.call_soon_threadsafe(stop.set)
    serving.result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    # Let transports that are closing (NATS connections) finish on their own loop before it
    # closes; otherwise their finalisers warn later, inside whichever test runs then.
    loop.run_until_complete(asyncio.sleep(0.2))
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


async def _result(future: asyncio.Future[T]) -> T:
    return await future


def _param_value(parameter: dict[str, Any]) -> Any:
    if parameter["name"] == "instance":
        return st.one_of(st.just("acme"), st.from_regex(INSTANCE_ID_PATTERN, fullmatch=True),
                         st.text(max_size=12))  # fmt: skip
    conforming = from_schema(parameter["schema"], COMPONENTS).map(str)
    return st.one_of(conforming, st.text(max_size=12))


@st.composite
def requests(draw: st.DrawFn, method: str, path: str, operation: dict[str, Any]) -> dict[str, Any]:
    target = path
    query: dict[str, str] = {}
    headers: dict[str, str] = {}
    for parameter in operation.get("parameters", []):
        name = parameter["name"]
        if parameter["in"] == "path":
            value = draw(_param_value(parameter))
            target = target.replace("{" + name + "}", quote(str(value), safe="") or "x")
        elif parameter["in"] == "query" and draw(st.booleans()):
            query[name] = draw(_param_value(parameter))
        elif parameter["in"] == "header" and draw(st.booleans()):
            headers[name] = draw(st.from_regex(r"\A[!-~]{1,40}\Z"))
    if query:
        target += "?" + urlencode(query)
    body = b""
    if "requestBody" in operation or draw(st.integers(0, 9)) == 0:
        content = operation.get("requestBody", {}).get("content", {})
        schema = content.get("application/json", {}).get("schema", {})
        conforming = from_schema(schema, COMPONENTS)
        value = draw(st.one_of(conforming, conforming.flatmap(mutated), ANY_JSON))
        body = json.dumps(value).encode()
        if draw(st.integers(0, 9)) == 0:
            body = draw(st.binary(max_size=64))
    corrupt = draw(st.sampled_from(["none"] * 6 + ["signature", "body", "key", "stale"]))
    return {"method": method, "target": target, "body": body, "headers": headers,
            "corrupt": corrupt}  # fmt: skip


def send(relay: Relay, request: dict[str, Any]) -> tuple[httpx.Response, int, int]:
    method, target, body = request["method"], request["target"], request["body"]
    now = time.time() - (1000 if request["corrupt"] == "stale" else 0)
    headers = signed_headers(API_KEY_ID, API_SECRET, method, target, body, now)
    if request["corrupt"] == "signature":
        headers["X-Wabus-Signature"] = "v1=" + "0" * 64
    elif request["corrupt"] == "key":
        headers["X-Wabus-Key-Id"] = "intruder"
    sent_body = body + b" " if request["corrupt"] == "body" else body
    headers |= request["headers"] | {"Content-Type": "application/json"}

    async def go() -> tuple[httpx.Response, int, int]:
        before = await relay.count_commands()
        async with httpx.AsyncClient(timeout=30) as http:
            response = await http.request(
                method, relay.url + target, content=sent_body, headers=headers
            )
        return response, before, await relay.count_commands()

    return relay.run(go())


@pytest.mark.parametrize(
    ("method", "path", "operation"), OPERATIONS, ids=[f"{m} {p}" for m, p, _ in OPERATIONS]
)
def test_fuzzed_requests_never_fail_the_relay_nor_publish_when_refused(
    relay: Relay, method: str, path: str, operation: dict[str, Any]
) -> None:
    statuses: list[int] = []

    @hypothesis_settings(
        max_examples=EXAMPLES_PER_ROUTE,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(request=requests(method, path, operation))
    def check(request: dict[str, Any]) -> None:
        response, before, after = send(relay, request)
        statuses.append(response.status_code)
        assert response.status_code < 500, (request, response.text)
        if response.status_code >= 400:
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["code"]
            assert after == before, ("a refused request published a command", request)
        if request["corrupt"] != "none":
            assert response.status_code in {401, 404, 405}, (request, response.text)

    check()
    assert any(400 <= status < 500 for status in statuses)
