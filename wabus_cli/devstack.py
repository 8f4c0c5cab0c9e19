"""`wabus dev`: embedded nats-server, connector, relay and webhook inspector in one process.

One per data folder (`wabus_cli.devlock`). It stops in order — the connector first, while NATS
and the relay still run, so that its last events (each session's `connection.close`) are
published rather than spooled; then the relay and the inspector; NATS last — within
`STOP_WITHIN` seconds of Ctrl-C when NATS answers. The nats-server runs in a session of its own
(`wabus.embedded`), so the terminal's Ctrl-C reaches only this process, which stops it last.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from connector.service import SPOOL_FILE, ensure_dev_instance, run_connector
from connector.spool import Spool
from relay.app import create_app
from relay.webhooks.signature import new_secret
from wabus.embedded import EmbeddedNats, free_port
from wabus.logs import shown_url
from wabus.serve import serve_app
from wabus.settings import EngineName, Settings
from wabus_cli.console import Echo, wait_until
from wabus_cli.devconsole import DevConsole, read_stdin_lines, stop_reading_stdin
from wabus_cli.devlock import DevLock
from wabus_cli.devstate import (
    DEV_FILE,
    DevState,
    load_dev_state,
    save_dev_state,
    shown_api_key,
    shown_secret,
)
from wabus_cli.inspector import create_inspector_app
from wabus_cli.natsclient import close_quietly, connect_cli

DEV_INSTANCE = "default"
LOOPBACK = "127.0.0.1"

CONNECTOR_STOP_WITHIN = 1.5
"""Seconds the connector gets to stop (NATS and the relay still up) before the rest is stopped."""
STOP_WITHIN = 2.5
"""Seconds after Ctrl-C by which everything has stopped when NATS answers (about 1 s measured);
NATS is stopped after them in well under a second. Past it, a line says what is still stopping."""
GIVE_UP_AFTER = 20.0
"""Seconds after Ctrl-C after which what is still stopping (waiting out its own NATS timeouts,
say, when an external NATS is down) is cancelled."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DevPorts:
    relay: int = 8080
    connector: int = 8081
    inspector: int = 8082
    nats: int = 4222


def dev_settings(
    env: Settings, state: DevState, nats_url: str, ports: DevPorts
) -> tuple[Settings, Settings]:
    """Relay and connector settings: the environment wins, dev defaults fill the gaps."""
    loopback = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
    common = {
        "nats_url": nats_url,
        "host": LOOPBACK,
        "api_keys": env.api_keys or [state.api_key],
        "webhook_secret": env.webhook_secret or SecretStr(state.webhook_secret),
        "webhook_url": env.webhook_url or f"http://{LOOPBACK}:{ports.inspector}/webhook",
        "webhook_allow_cidrs": env.webhook_allow_cidrs or loopback,
        "engine": env.engine if "WABUS_ENGINE" in os.environ else EngineName.SIM,
    }
    dashboard: dict[str, object] = {}
    if not env.dashboard_password and not env.dashboard_login_token:
        # no configuration needed: a one-time link, exchanged once for a session
        dashboard["dashboard_login_token"] = SecretStr(secrets.token_urlsafe(24))
    relay = env.model_copy(update={**common, **dashboard, "port": ports.relay})
    connector = env.model_copy(update={**common, "port": ports.connector})
    return relay, connector


def banner(state: DevState, relay: Settings, connector: Settings, inspector: bool) -> str:
    """What `wabus dev` prints once it is ready: where everything listens, and which credentials
    it uses — as fingerprints; the full values stay in the 0600 file or the environment."""
    stored = relay.data_dir / DEV_FILE
    api_key = relay.api_keys[0] if relay.api_keys else state.api_key
    key_from = "WABUS_API_KEYS" if api_key != state.api_key else f"{stored} (mode 0600)"
    secret = relay.webhook_secret.get_secret_value() if relay.webhook_secret else ""
    secret_from = (
        "WABUS_WEBHOOK_SECRET" if secret != state.webhook_secret else f"{stored} (mode 0600)"
    )
    lines = [
        "wabus dev is running",
        f"  NATS       {shown_url(relay.nats_url or '')}",
        f"  relay      http://{LOOPBACK}:{relay.port}   (API, /healthz, /metrics)",
        f"  connector  http://{LOOPBACK}:{connector.port}   (engine: {connector.engine.value})",
        f"  webhooks → {shown_url(relay.webhook_url or '')}"
        + ("   (built-in inspector)" if inspector else ""),
        dashboard_line(relay),
        "",
        f"  API key         {shown_api_key(api_key)}   full value in {key_from}",
        f"  webhook secret  {shown_secret(secret)}   full value in {secret_from}",
        "",
        "  follow every event:  wabus tail",
    ]
    if connector.engine is EngineName.SIM:
        lines += [
            "  try it, in another terminal:",
            '    wabus sim inbound default --from 5511999999999 --text "hello"',
            '    wabus send default 5511999999999 "hi from wabus"',
        ]
    else:
        lines += [
            "  pair your phone: the QR code appears below as soon as WhatsApp offers one",
            "  (or type your phone number and press Enter to pair with a code); then:",
            '    wabus send default <phone digits> "hi from wabus"',
        ]
    return "\n".join(lines)


def dashboard_line(relay: Settings) -> str:
    """Where the dashboard is and how to log in: `wabus dev`'s one-time link (shown in full:
    it is spent by its first use), or the password from the environment."""
    base = f"http://{LOOPBACK}:{relay.port}/ui"
    if relay.dashboard_login_token and not relay.dashboard_password:
        token = relay.dashboard_login_token.get_secret_value()
        return f"  dashboard  {base}/login/{token}   (one-time login link)"
    return f"  dashboard  {base}   (password: WABUS_DASHBOARD_PASSWORD)"


async def ready(url: str) -> bool:
    """True once the service at `url` answers `/readyz` with 200 (the banner waits for it)."""
    try:
        async with httpx.AsyncClient(timeout=2) as http:
            return (await http.get(url + "/readyz")).status_code == 200
    except httpx.HTTPError:
        return False


async def run_dev(
    env: Settings,
    ports: DevPorts,
    stop: asyncio.Event,
    phone: str | None = None,
    echo: Echo = lambda line: print(line, flush=True),
) -> None:
    """Run the stack until `stop`; `DevAlreadyRunning` when this folder has one already."""
    logging.getLogger("httpx").setLevel(logging.WARNING)  # no line per readiness poll
    data_dir = env.data_dir
    with DevLock(data_dir) as lock:
        state = load_dev_state(data_dir) or DevState(
            api_key=f"dev:{secrets.token_urlsafe(24)}", webhook_secret=new_secret()
        )
        embedded: EmbeddedNats | None = None
        nats_url = env.nats_url
        if not nats_url:
            echo("… starting nats-server (embedded, JetStream)")
            embedded = EmbeddedNats(data_dir / "nats", port=free_port(ports.nats))
            await asyncio.to_thread(embedded.start)
            nats_url = embedded.url
        try:
            ports = DevPorts(
                relay=free_port(ports.relay), connector=free_port(ports.connector),
                inspector=free_port(ports.inspector), nats=ports.nats,
            )  # fmt: skip
            relay, connector = dev_settings(env, state, nats_url, ports)
            state.nats_url, state.relay_url = nats_url, f"http://{LOOPBACK}:{relay.port}"
            state.subject_prefix = env.subject_prefix
            save_dev_state(data_dir, state)
            lock.describe(f"pid {os.getpid()}, relay {state.relay_url}, NATS {shown_url(nats_url)}")
            inspector = not env.webhook_url
            await _run_services(state, relay, connector, ports, inspector, stop, phone, echo)
        finally:
            if embedded:
                await asyncio.to_thread(embedded.stop)
        _say_what_the_spool_kept(connector, echo)


async def _run_services(
    state: DevState,
    relay: Settings,
    connector: Settings,
    ports: DevPorts,
    use_inspector: bool,
    stop: asyncio.Event,
    phone: str | None,
    echo: Echo,
) -> None:
    # First, so that a NATS that is not there is said at once (`NatsUnreachable`); subscribed
    # before the connector starts, so that its first QR is not missed.
    nc = await connect_cli(state.nats_url, "wabus-dev-console", echo)
    stdin_reader = False
    try:
        await ensure_dev_instance(connector, DEV_INSTANCE)
        console = DevConsole(nc, relay, echo, phone)
        await console.start()
        stdin_reader = connector.engine is EngineName.NEONIZE and read_stdin_lines(console)
        await _serve_until_stopped(state, relay, connector, ports, use_inspector, stop, echo)
    finally:
        if stdin_reader:
            stop_reading_stdin()
        await close_quietly(nc)


async def _serve_until_stopped(
    state: DevState,
    relay: Settings,
    connector: Settings,
    ports: DevPorts,
    use_inspector: bool,
    stop: asyncio.Event,
    echo: Echo,
) -> None:
    """Start the services, print the banner once they are ready, and on `stop` stop them in
    order: the connector, then the relay and the inspector."""
    connector_stop, services_stop = asyncio.Event(), asyncio.Event()
    secret = relay.webhook_secret.get_secret_value() if relay.webhook_secret else ""
    services: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {
        "connector": lambda: run_connector(connector, connector_stop),
        "relay": lambda: serve_app(
            create_app(relay), LOOPBACK, relay.port, services_stop,
            header_timeout=relay.header_timeout, body_timeout=relay.body_timeout,
        ),
    }  # fmt: skip
    if use_inspector:
        services["inspector"] = lambda: serve_app(
            create_inspector_app(secret), LOOPBACK, ports.inspector, services_stop
        )
    async with asyncio.TaskGroup() as tasks:
        echo(f"… starting the connector (engine: {connector.engine.value}) and the relay")
        running = {name: tasks.create_task(start(), name=name) for name, start in services.items()}
        urls = (state.relay_url, f"http://{LOOPBACK}:{connector.port}")
        await wait_until(
            lambda: _all_ready(urls, stop), "the relay and the connector to be ready", echo
        )
        if not stop.is_set():
            echo(banner(state, relay, connector, use_inspector))
        await stop.wait()
        echo("… stopping: the connector, then the relay, then NATS")
        stopping_since = asyncio.get_running_loop().time()
        connector_stop.set()
        await asyncio.wait({running["connector"]}, timeout=CONNECTOR_STOP_WITHIN)
        services_stop.set()
        await _stopped(running, stopping_since, echo)


async def _stopped(running: dict[str, asyncio.Task[None]], since: float, echo: Echo) -> None:
    """Wait for the services to end: say which are late `STOP_WITHIN` seconds after `since`,
    cancel them after `GIVE_UP_AFTER` (a cancelled service skips the rest of its clean stop:
    the last resort)."""
    now = asyncio.get_running_loop().time
    _, late = await asyncio.wait(set(running.values()), timeout=since + STOP_WITHIN - now())
    if not late:
        return
    names = ", ".join(name for name, task in running.items() if task in late)
    echo(f"… still stopping: {names} (cancelled after {GIVE_UP_AFTER:g}s)")
    _, late = await asyncio.wait(late, timeout=since + GIVE_UP_AFTER - now())
    for task in late:
        task.cancel()


async def _all_ready(urls: tuple[str, ...], stop: asyncio.Event) -> bool:
    """True when every service answers /readyz (or when stopping: nothing left to wait for)."""
    return stop.is_set() or all([await ready(url) for url in urls])


def _say_what_the_spool_kept(connector: Settings, echo: Echo) -> None:
    """The connector publishes its spool while NATS runs, and NATS outlives it here; what is
    still there (NATS was down when it stopped) is kept on purpose — the next start publishes it
    first — and said, never left silently."""
    path: Path = connector.data_dir / SPOOL_FILE
    if not path.exists():
        return
    spool = Spool(path, connector.spool_max_events)
    try:
        depth = len(spool)
    finally:
        spool.close()
    if depth:
        echo(f"… {depth} event(s) kept in {path}: the next `wabus dev` publishes them first")
