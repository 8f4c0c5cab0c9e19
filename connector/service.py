"""Wires the connector together: NATS, streams and buckets, engine, spool and publisher, the
instance manager with its session supervisors, the command consumer, and the health app."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from concurrent.futures import ThreadPoolExecutor

from starlette.applications import Starlette
from starlette.requests import Request

from connector.buckets import ensure_buckets, ensure_instance
from connector.commands import CommandConsumer
from connector.engine import Engine
from connector.engines.sim import SimEngine
from connector.inbound import Inbound
from connector.instances import InstanceManager
from connector.lifecycle import Policy
from connector.memory import MessageMemory
from connector.pacing import Pacing
from connector.preparation import Preparer
from connector.publisher import EventPublisher
from connector.queries import subscribe_queries
from connector.sends import SendLedger
from connector.sim_control import subscribe_sim_controls
from connector.spool import Spool
from connector.status import StatusBoard
from wabus.health import health_routes
from wabus.leases import Leases
from wabus.logs import configure_logging, get_logger, shown_url
from wabus.natsbus import connect, ensure_streams, streams_present, until_ready
from wabus.serve import run_until_signal, serve_app
from wabus.settings import EngineName, Settings

log = get_logger(__name__)

SPOOL_FILE = "spool.sqlite3"
EXECUTOR_SPARE = 8
"""Workers beyond one per session, for the short blocking calls everything else makes."""
FLUSH_AT_STOP = 1.0
"""Seconds a stopping connector spends publishing what its spool still holds (NATS up)."""


def build_engine(settings: Settings) -> Engine:
    if settings.engine is EngineName.SIM:
        return SimEngine(
            pairing=settings.sim_pairing,
            qr_interval=settings.sim_qr_interval,
            data_dir=settings.sim_data_dir or settings.data_dir / "sim",
        )
    # Imported only when chosen: importing neonize loads its Go library.
    try:
        from connector.engines.neonize import build_neonize_engine
    except ModuleNotFoundError as error:
        if error.name != "neonize":
            raise
        raise RuntimeError(
            "WABUS_ENGINE=neonize needs the neonize package: install wabus with it "
            "(pip install 'wabus[neonize]'), or set WABUS_ENGINE=sim"
        ) from error
    return build_neonize_engine(settings)


def size_executor(settings: Settings) -> None:
    """Each neonize session holds a worker of the loop's default executor for its whole life
    (every Go call goes through `asyncio.to_thread`), so the pool must exceed the session cap."""
    workers = settings.max_sessions + EXECUTOR_SPARE
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="wabus-engine")
    )


def create_health_app(readiness: dict[str, bool]) -> Starlette:
    async def ready(request: Request) -> dict[str, bool]:
        return dict(readiness)

    return Starlette(routes=health_routes(ready))


def connector_id(settings: Settings) -> str:
    return settings.connector_id or f"{socket.gethostname()}-{os.getpid()}"


async def run_connector(settings: Settings, stop: asyncio.Event) -> None:
    """Run until `stop` is set; NATS outages are waited out, never fatal."""
    size_executor(settings)
    nc = await connect(settings, "wabus-connector")
    js = nc.jetstream()
    topology = settings.topology
    await until_ready(lambda: ensure_streams(js, settings), "streams")
    await until_ready(
        lambda: ensure_buckets(
            js,
            topology,
            settings.lease_ttl if settings.leases else None,
            replicas=settings.stream_replicas,
        ),
        "buckets",
    )

    def connected() -> bool:
        return bool(nc.is_connected)

    def reconnects() -> int:
        return int(nc.stats["reconnects"])

    spool = Spool(settings.data_dir / SPOOL_FILE, settings.spool_max_events)
    publisher = EventPublisher(js, topology, spool, connected)
    board = StatusBoard(js, topology, connected)
    engine = build_engine(settings)
    policy = Policy(
        qr_max_refreshes=settings.qr_max_refreshes,
        backoff_base=settings.reconnect_base,
        backoff_max=settings.reconnect_max,
        max_attempts=settings.reconnect_max_attempts,
    )
    me = connector_id(settings)
    leases = Leases(js, topology.leases_bucket, me, settings.lease_ttl) if settings.leases else None
    memory = MessageMemory(
        js,
        topology,
        settings.message_memory_days * 86_400,
        replicas=settings.stream_replicas,
        connected=connected,
    )
    instances = InstanceManager(
        engine,
        publisher.emit,
        Inbound(publisher.emit, memory),
        board,
        policy,
        me,
        settings.max_sessions,
        leases,
        settings.takeover_rate,
    )
    pacing = Pacing(settings.pacing_interval, settings.send_jitter, settings.send_typing)
    consumer = CommandConsumer(
        js,
        topology,
        instances,
        publisher.emit,
        SendLedger(js, topology),
        pacing,
        Preparer(memory, settings.webhook_allow_cidrs),
        settings.command_ack_wait,
        reconnects,
        max_deliver=settings.command_max_deliver,
    )
    readiness = {"nats": True, "streams": True}

    async def watch_readiness() -> None:
        while not stop.is_set():
            readiness["nats"] = nc.is_connected
            readiness["streams"] = nc.is_connected and await streams_present(js, settings)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 2.0)

    async def consume_when_loaded() -> None:
        # Commands of an instance not restored yet would be refused as unknown.
        loaded = asyncio.create_task(instances.loaded.wait())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({loaded, stopping}, return_when=asyncio.FIRST_COMPLETED)
        loaded.cancel()
        stopping.cancel()
        if not stop.is_set():
            await consumer.run(stop)

    subscriptions = [await subscribe_queries(nc, topology, instances)]
    if isinstance(engine, SimEngine):
        subscriptions.append(await subscribe_sim_controls(nc, topology, engine))
    log.info(
        "connector started",
        connector=me,
        engine=engine.name,
        nats=shown_url(settings.nats_url or ""),
        port=settings.port,
        max_sessions=settings.max_sessions,
        leases=settings.leases,
    )
    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(instances.watch(js, topology, stop, reconnects))
            tasks.create_task(consume_when_loaded())
            tasks.create_task(instances.keep_leases(stop))
            tasks.create_task(publisher.drain(stop))
            tasks.create_task(board.run(stop))
            tasks.create_task(watch_readiness())
            tasks.create_task(
                serve_app(create_health_app(readiness), settings.host, settings.port, stop)
            )
    finally:
        for subscription in subscriptions:
            try:
                await subscription.unsubscribe()
            except Exception as error:  # stopping anyway: say what was not cleaned up
                log.info(
                    "subscription not unsubscribed",
                    subject=subscription.subject,
                    error=repr(error),
                )
        await instances.close()
        await engine.close()
        await publisher.flush(within=FLUSH_AT_STOP)  # what is left is kept for the next start
        try:
            await asyncio.wait_for(nc.drain(), 10)
        except Exception as error:  # unflushed publishes are in the spool or redelivered
            log.warning("NATS connection not drained", error=repr(error))
        spool.close()
        log.info("connector stopped", spool_depth=len(spool))


async def ensure_dev_instance(settings: Settings, instance: str) -> None:
    """`wabus dev` on a first run: an instance to play with, as the relay would create it."""
    nc = await connect(settings, "wabus-dev")
    try:
        if await ensure_instance(nc.jetstream(), settings.topology, instance):
            log.info("instance created for local development", instance=instance)
    finally:
        await nc.close()


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    run_until_signal(lambda stop: run_connector(settings, stop))
