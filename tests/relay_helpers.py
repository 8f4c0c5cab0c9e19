"""Helpers for the relay tests: signed raw requests (over HTTP, or in-process to an app on
fakes), reading what reached NATS, and writing what the connector would write (status, send
records, media)."""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from datetime import datetime, timedelta
from typing import Any

import httpx
from nats.aio.client import Client as NATS
from nats.js.api import ObjectMeta
from starlette.types import ASGIApp, Receive, Scope, Send

from relay.app import create_app
from relay.client import signed_headers
from relay.delivery.records import Attempt, Outcome
from relay.problems import PROBLEM_JSON
from schemas.envelope import utc_now
from schemas.instances import InstanceStatus, SendRecord, send_record_key
from tests.conftest import API_KEY_ID, API_SECRET
from tests.fakes import Fakes
from wabus.buckets import open_bucket, open_media_store
from wabus.settings import Settings

TENANT = "tenant"
TENANT_SECRET = "tenant-secret-" + "t" * 20


def route_settings(**changes: Any) -> Settings:
    """Settings of a relay on fakes: the operator's key and a key scoped to `acme` and `beta-*`.
    No NATS URL: nothing connects."""
    keys = [f"{API_KEY_ID}:{API_SECRET}", f"{TENANT}@acme|beta-*:{TENANT_SECRET}"]
    return Settings(api_keys=keys, log_format="console", **changes)


def refused(response: httpx.Response, status: int, code: str) -> None:
    """`response` is a problem answer with `status` and `code`."""
    assert response.headers["content-type"].startswith(PROBLEM_JSON), response.text
    assert (response.status_code, response.json()["code"]) == (status, code), response.text


@contextlib.asynccontextmanager
async def relay_on(
    fakes: Fakes, settings: Settings | None = None, *, raise_app_exceptions: bool = True
) -> AsyncIterator[httpx.AsyncClient]:
    """The real app, built by `create_app` on `fakes` and served in-process: its lifespan runs
    around the block, and each request gets a copy of the lifespan's state, as a server gives.
    An exception the app raises on to its server fails the request, unless
    `raise_app_exceptions` is off (then the client gets what the app answered before)."""
    app = create_app(settings or route_settings(), fakes.open)
    async with app.router.lifespan_context(app) as state:
        transport = httpx.ASGITransport(
            app=_with_state(app, state or {}), raise_app_exceptions=raise_app_exceptions
        )
        async with httpx.AsyncClient(transport=transport, base_url="http://relay.test") as client:
            yield client


def _with_state(app: ASGIApp, state: Mapping[str, Any]) -> ASGIApp:
    async def serve(scope: Scope, receive: Receive, send: Send) -> None:
        await app({**scope, "state": dict(state)}, receive, send)

    return serve


async def signed(
    url: str,
    method: str,
    target: str,
    payload: Any = None,
    *,
    body: bytes | None = None,
    key_id: str = API_KEY_ID,
    secret: str = API_SECRET,
    headers: dict[str, str] | None = None,
    now: float | None = None,
    nonce: bool = True,
) -> httpx.Response:
    """One signed request with full control over what is signed and sent; a random `nonce`
    keeps identical requests in one second apart (unless `nonce=False`)."""
    target, body, sent = _signing(
        method, target, payload, body, key_id, secret, headers, now, nonce=nonce
    )
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.request(method, url + target, content=body, headers=sent)


async def signed_in_process(
    client: httpx.AsyncClient,
    method: str,
    target: str,
    payload: Any = None,
    *,
    body: bytes | None = None,
    key_id: str = API_KEY_ID,
    secret: str = API_SECRET,
    headers: dict[str, str] | None = None,
    now: float | None = None,
    nonce: bool = True,
) -> httpx.Response:
    """`signed`, to an app served in-process (`relay_on`)."""
    target, body, sent = _signing(
        method, target, payload, body, key_id, secret, headers, now, nonce=nonce
    )
    return await client.request(method, target, content=body, headers=sent)


def _signing(
    method: str,
    target: str,
    payload: Any,
    body: bytes | None,
    key_id: str,
    secret: str,
    headers: dict[str, str] | None,
    now: float | None,
    *,
    nonce: bool,
) -> tuple[str, bytes, dict[str, str]]:
    """The target (with its nonce), body and headers of one signed request."""
    if nonce:
        target += ("&" if "?" in target else "?") + "nonce=" + secrets.token_hex(6)
    if body is None:
        body = b"" if payload is None else json.dumps(payload).encode()
    extra = dict(headers or {})
    # signed (v2), so given to the signer; a test's raw bytes key is signed as it is sent
    key = extra.get("Idempotency-Key")
    sent = signed_headers(key_id, secret, method, target, body, now or time.time(), key)
    if body:
        sent["Content-Type"] = "application/json"
    sent.update(extra)
    return target, body, sent


async def commands_stored(nc: NATS, settings: Settings) -> int:
    info = await nc.jetstream().stream_info(settings.topology.commands_stream)
    return int(info.state.messages)


async def last_command(nc: NATS, settings: Settings, instance: str, name: str) -> dict[str, Any]:
    stored = await nc.jetstream().get_last_msg(
        settings.topology.commands_stream, settings.topology.command(instance, name)
    )
    command: dict[str, Any] = json.loads(stored.data or b"{}")
    assert stored.headers
    assert stored.headers["Nats-Msg-Id"] == command["id"]
    return command


async def write_status(nc: NATS, settings: Settings, instance: str, **fields: Any) -> None:
    """Write an `InstanceStatus` as the connector would."""
    kv = await open_bucket(nc.jetstream(), settings.topology.status_bucket, "Instance status")
    status = InstanceStatus(instance=instance, updated_at=utc_now(), **fields)
    await kv.put(instance, status.model_dump_json().encode())


async def write_send_record(nc: NATS, settings: Settings, instance: str, **fields: Any) -> None:
    """Write a `SendRecord` as the connector would."""
    kv = await open_bucket(nc.jetstream(), settings.topology.sends_bucket, "Send records")
    record = SendRecord(instance=instance, updated_at=utc_now(), **fields)
    key = send_record_key(instance, record.command_id)
    await kv.put(key, record.model_dump_json().encode())


async def store_media(nc: NATS, settings: Settings, media_id: str, data: bytes, mime: str) -> None:
    """Store inbound media as the connector would: name = media id, description = mimetype."""
    store = await open_media_store(nc.jetstream(), settings.topology)
    await store.put(media_id, data, meta=ObjectMeta(name=media_id, description=mime))


def dead_attempt(number: int, instance: str, endpoint: str, now: datetime) -> Attempt:
    """Attempt `number` of an event that ended dead at `endpoint`, `60 - number` s before `now`."""
    return Attempt(
        event_id=f"evt_{number}",
        event_seq=number,
        instance=instance,
        event_type="message.received",
        endpoint=endpoint,
        attempt=1,
        outcome=Outcome.DEAD,
        status_code=500,
        latency_ms=1.0,
        error=None,
        next_attempt_at=None,
        at=now - timedelta(seconds=60 - number),
    )
