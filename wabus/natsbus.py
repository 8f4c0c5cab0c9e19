"""The NATS adapter: connecting, and creating the streams the contract names."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import nats
import nats.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError, ServiceUnavailableError

from schemas.streams import Retention, StreamSpec, stream_specs
from wabus.logs import get_logger, shown_url
from wabus.settings import Settings

log = get_logger(__name__)

UNAVAILABLE = (nats.errors.Error, asyncio.TimeoutError)
"""Errors that mean "NATS is not there right now" (timeouts, no responders while JetStream comes
back, a closed or reconnecting connection, …): keep the work and try again later. Only a rejection
of the message itself is final; when unsure, keep it."""

NOT_READY = (
    nats.errors.NoServersError,
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    ServiceUnavailableError,
    asyncio.TimeoutError,
    OSError,
)
"""What NATS answers while it is starting or a cluster is still electing its JetStream leader:
a service that starts then waits, saying so, instead of exiting."""

WAIT_MAX_DELAY = 5.0

T = TypeVar("T")

_RETENTION = {
    Retention.LIMITS: RetentionPolicy.LIMITS,
    Retention.WORK_QUEUE: RetentionPolicy.WORK_QUEUE,
}


def server_urls(url: str) -> list[str]:
    """`NATS_URL` as the servers to try: one URL, or several separated by commas (the nodes of
    a cluster, `nats://a:4222,nats://b:4222`), as NATS clients write them."""
    return [one.strip() for one in url.split(",") if one.strip()]


def shared_credentials(servers: list[str]) -> dict[str, str]:
    """The user and password (or token) the listed URLs carry, as connect options, when they
    all carry the same: the client then also presents them to the servers a cluster announces
    (nats-py adds those without credentials, and a reconnect to one would be refused with
    `Authorization Violation`)."""
    found = set()
    for server in servers:
        parsed = urlsplit(server if "://" in server else f"nats://{server}")
        found.add((unquote(parsed.username or ""), unquote(parsed.password or "")))
    if len(found) != 1:
        return {}
    user, password = found.pop()
    if not user:
        return {}
    return {"user": user, "password": password} if password else {"token": user}


async def until_ready(step: Callable[[], Awaitable[T]], what: str) -> T:
    """Run `step` until NATS lets it through: while the servers are unreachable or JetStream
    is not up yet (a cluster electing its leader), wait and say so, with a growing pause."""
    delay = 0.5
    while True:
        try:
            return await step()
        except NOT_READY as error:
            log.warning("waiting for NATS", step=what, error=type(error).__name__, retry_in=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, WAIT_MAX_DELAY)


async def connect(settings: Settings, name: str) -> NATS:
    """Connect (waiting for NATS to come up) and keep reconnecting forever: a service outlives
    NATS restarts, it never exits. `NATS_URL` may list several servers, comma-separated."""
    if not settings.nats_url:
        raise RuntimeError("NATS_URL is not set (only `wabus dev` starts an embedded nats-server)")
    servers = server_urls(settings.nats_url)

    async def on_disconnect() -> None:
        log.warning("nats disconnected", client=name)

    async def on_reconnect() -> None:
        log.info("nats reconnected", client=name)

    async def on_error(error: Exception) -> None:
        log.warning("nats error", client=name, error=str(error))

    options: dict[str, Any] = {
        "name": name,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.5,
        "disconnected_cb": on_disconnect,
        "reconnected_cb": on_reconnect,
        "error_cb": on_error,
    }
    if settings.nats_creds:
        options["user_credentials"] = str(settings.nats_creds)
    else:
        options |= shared_credentials(servers)
    shown = shown_url(settings.nats_url)
    client: NATS = await until_ready(
        lambda: nats.connect(servers=servers, **options), f"connect to {shown}"
    )
    return client


def _config(spec: StreamSpec, replicas: int) -> StreamConfig:
    return StreamConfig(
        name=spec.name,
        description=spec.description,
        subjects=list(spec.subjects),
        retention=_RETENTION[spec.retention],
        storage=StorageType.FILE,
        max_age=spec.max_age_seconds,
        duplicate_window=spec.duplicate_window_seconds,
        num_replicas=replicas,
    )


async def ensure_streams(
    js: JetStreamContext, settings: Settings, replicas: int | None = None
) -> None:
    """Create the streams or bring their limits up to date; safe to run concurrently.

    `replicas` defaults to `WABUS_STREAM_REPLICAS`; raising it on existing streams (R1 → R3 after
    moving to a cluster) is an update JetStream performs in place.
    """
    replicas = settings.stream_replicas if replicas is None else replicas
    for spec in stream_specs(settings.topology, settings.events_max_age):
        config = _config(spec, replicas)
        try:
            info = await js.stream_info(spec.name)
        except NotFoundError:
            await js.add_stream(config)
            log.info("stream created", stream=spec.name)
            continue
        current = info.config
        wanted = (config.max_age, config.duplicate_window, config.num_replicas)
        if (current.max_age, current.duplicate_window, current.num_replicas) != wanted:
            await js.update_stream(config)
            log.info("stream updated", stream=spec.name)


async def streams_present(js: JetStreamContext, settings: Settings) -> bool:
    """True when every stream exists (readiness); False when one is missing or NATS is away."""
    try:
        for spec in stream_specs(settings.topology, settings.events_max_age):
            await js.stream_info(spec.name)
    except NotFoundError:
        return False
    except UNAVAILABLE as error:
        log.debug("streams not checked: NATS unavailable", error=repr(error))
        return False
    return True
