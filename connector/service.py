"""Wires the connector together: NATS, streams, engine, publisher, command consumer, health app."""

from __future__ import annotations

import asyncio
import contextlib

from starlette.applications import Starlette
from starlette.requests import Request

from connector.commands import CommandConsumer
from connector.engine import Engine
from connector.engines.sim import SimEngine
from connector.publisher import EventPublisher
from connector.sessions import Sessions
from connector.sim_control import subscribe_sim_controls
from wabus.health import health_routes
from wabus.logs import configure_logging, get_logger
from wabus.natsbus import connect, ensure_streams, streams_present
from wabus.serve import run_until_signal, serve_app
from wabus.settings import EngineName, Settings

log = get_logger(__name__)


def build_engine(settings: Settings) -> Engine:
    if settings.engine is EngineName.SIM:
        return SimEngine()
    # Imported only when chosen: importing neonize loads its Go library.
    from connector.engines.neonize import build_neonize_engine

    return build_neonize_engine(settings)


def create_health_app(settings: Settings, readiness: dict[str, bool]) -> Starlette:
    async def ready(request: Request) -> dict[str, bool]:
        return dict(readiness)

    return Starlette(routes=health_routes(ready))


async def run_connector(settings: Settings, stop: asyncio.Event) -> None:
    """Run until `stop` is set; NATS outages are waited out, never fatal."""
    nc = await connect(settings, "wabus-connector")
    js = nc.jetstream()
    await ensure_streams(js, settings)
    publisher = EventPublisher(js, settings.topology)
    engine = build_engine(settings)
    sessions = Sessions(engine, publisher.emit)
    readiness = {"nats": True, "streams": True}

    async def watch_readiness() -> None:
        while not stop.is_set():
            readiness["nats"] = nc.is_connected
            readiness["streams"] = nc.is_connected and await streams_present(js, settings)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=5.0)

    sim_subscription = None
    if isinstance(engine, SimEngine):
        sim_subscription = await subscribe_sim_controls(nc, settings.topology, engine, sessions)
    consumer = CommandConsumer(js, settings.topology, sessions, publisher.emit)
    log.info("connector started", engine=engine.name, nats=settings.nats_url, port=settings.port)
    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(consumer.run(stop))
            tasks.create_task(watch_readiness())
            tasks.create_task(
                serve_app(
                    create_health_app(settings, readiness), settings.host, settings.port, stop
                )
            )
    finally:
        if sim_subscription is not None:
            await sim_subscription.unsubscribe()
        await sessions.close()
        await engine.close()
        await nc.drain()
        log.info("connector stopped")


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    run_until_signal(lambda stop: run_connector(settings, stop))
