"""Helpers for the relay tests: signed raw requests, reading what reached NATS, and writing
what the connector would write (status, send records, media)."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import httpx
from nats.aio.client import Client as NATS
from nats.js.api import ObjectMeta

from relay.client import signed_headers
from schemas.envelope import utc_now
from schemas.instances import InstanceStatus, SendRecord, send_record_key
from tests.conftest import API_KEY_ID, API_SECRET
from wabus.buckets import open_bucket
from wabus.settings import Settings


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
    if nonce:
        target += ("&" if "?" in target else "?") + "nonce=" + secrets.token_hex(6)
    if body is None:
        body = b"" if payload is None else json.dumps(payload).encode()
    sent = signed_headers(key_id, secret, method, target, body, now or time.time())
    if body:
        sent["Content-Type"] = "application/json"
    sent.update(headers or {})
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.request(method, url + target, content=body, headers=sent)


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
    js = nc.jetstream()
    try:
        store = await js.object_store(settings.topology.media_store)
    except Exception:
        store = await js.create_object_store(settings.topology.media_store)
    await store.put(media_id, data, meta=ObjectMeta(name=media_id, description=mime))
