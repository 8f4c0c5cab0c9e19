"""`wabus dev`: embedded nats-server, connector, relay and webhook inspector in one process.

Generated credentials are kept in `<data dir>/dev.json` (mode 0600) so they survive restarts and
so the other `wabus` subcommands (`send`, `sim`) find the running stack without configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import secrets
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import nats
from nats.aio.client import Client as NATS
from pydantic import SecretStr

from connector.service import ensure_dev_instance, run_connector
from relay.app import create_app
from relay.webhooks.signature import new_secret
from wabus.console import (
    Echo,
    connection_progress,
    events_subject,
    follow,
    request_pair_code,
    wait_until,
)
from wabus.embedded import EmbeddedNats, free_port
from wabus.inspector import create_inspector_app
from wabus.serve import serve_app
from wabus.settings import EngineName, Settings

DEV_FILE = "dev.json"
DEV_INSTANCE = "default"
LOOPBACK = "127.0.0.1"


@dataclass
class DevState:
    api_key: str
    webhook_secret: str
    nats_url: str = ""
    relay_url: str = ""
    subject_prefix: str = "wa"


def load_dev_state(data_dir: Path) -> DevState | None:
    path = data_dir / DEV_FILE
    if not path.exists():
        return None
    return DevState(**json.loads(path.read_text()))


def save_dev_state(data_dir: Path, state: DevState) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / DEV_FILE
    path.touch(mode=0o600, exist_ok=True)
    path.write_text(json.dumps(asdict(state), indent=2))


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
    relay = env.model_copy(update={**common, "port": ports.relay})
    connector = env.model_copy(update={**common, "port": ports.connector})
    return relay, connector


def banner(state: DevState, relay: Settings, connector: Settings, inspector: bool) -> str:
    key_id = state.api_key.split(":", 1)[0]
    from_env = bool(os.environ.get("WABUS_WEBHOOK_SECRET"))
    secret_shown = "(from WABUS_WEBHOOK_SECRET)" if from_env else state.webhook_secret
    lines = [
        "wabus dev is running",
        f"  NATS       {relay.nats_url}",
        f"  relay      http://{LOOPBACK}:{relay.port}   (API, /healthz, /metrics)",
        f"  connector  http://{LOOPBACK}:{connector.port}   (engine: {connector.engine.value})",
        f"  webhooks → {relay.webhook_url}" + ("   (built-in inspector)" if inspector else ""),
        "",
        f"  API key         {relay.api_keys[0] if relay.api_keys else '(from WABUS_API_KEYS)'}",
        f"  webhook secret  {secret_shown}",
        f"  (kept in {relay.data_dir / DEV_FILE}; key id {key_id})",
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


class DevConsole:
    """Shows connection progress as it happens and handles phone pairing for `wabus dev`."""

    def __init__(self, nc: NATS, settings: Settings, echo: Echo, phone: str | None) -> None:
        self._nc = nc
        self._settings = settings
        self._echo = echo
        self._phone = phone
        self._qr_instance: str | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        subject = events_subject(self._settings.topology, None, "connection.>")
        await follow(self._nc, subject, self._echo, self._render)

    def _render(self, envelope: dict[str, Any]) -> str | None:
        if envelope.get("type") == "connection.qr":
            first = self._qr_instance is None
            self._qr_instance = str(envelope.get("instance"))
            if first and self._phone:
                self.pair(self._phone)
                return (
                    f"… {self._qr_instance}: asking WhatsApp for a pairing code for +{self._phone}"
                )
        return connection_progress(envelope, "default")

    def pair(self, phone: str) -> None:
        """Ask for a pairing code for the instance that showed the last QR."""
        instance = self._qr_instance or "default"
        task = asyncio.create_task(self._pair(instance, phone))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pair(self, instance: str, phone: str) -> None:
        try:
            await request_pair_code(self._nc, self._settings.topology, instance, phone)
        except Exception as error:
            self._echo(f"✘ could not ask for a pairing code: {error}")
            return
        self._echo(f"… {instance}: pairing code requested for {phone}; it appears here shortly")

    def on_stdin_line(self, line: str) -> None:
        digits = "".join(ch for ch in line if ch.isdigit())
        if len(digits) >= 8:
            self.pair(digits)
        elif line.strip():
            self._echo(
                "type a phone number with its country code, digits only (e.g. 5511999999999)"
            )


async def ready(url: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=2) as http:
            return (await http.get(url + "/readyz")).status_code == 200
    except httpx.HTTPError:
        return False


def _read_stdin_lines(console: DevConsole) -> bool:
    """Feed typed lines to the console (interactive terminals only); True when installed."""
    if not sys.stdin.isatty():
        return False
    loop = asyncio.get_running_loop()

    def on_readable() -> None:
        line = sys.stdin.readline()
        if line:
            console.on_stdin_line(line)

    loop.add_reader(sys.stdin.fileno(), on_readable)
    return True


async def run_dev(
    env: Settings,
    ports: DevPorts,
    stop: asyncio.Event,
    phone: str | None = None,
    echo: Echo = lambda line: print(line, flush=True),
) -> None:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # no line per readiness poll
    data_dir = env.data_dir
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
    ports = DevPorts(
        relay=free_port(ports.relay), connector=free_port(ports.connector),
        inspector=free_port(ports.inspector), nats=ports.nats,
    )  # fmt: skip
    relay, connector = dev_settings(env, state, nats_url, ports)
    state.nats_url, state.relay_url = nats_url, f"http://{LOOPBACK}:{relay.port}"
    state.subject_prefix = env.subject_prefix
    save_dev_state(data_dir, state)
    use_inspector = not env.webhook_url
    nc: NATS | None = None
    stdin_reader = False
    try:
        await ensure_dev_instance(connector, DEV_INSTANCE)
        # Subscribed before the connector starts, so that its first QR is not missed.
        nc = await nats.connect(nats_url, name="wabus-dev-console")
        console = DevConsole(nc, relay, echo, phone)
        await console.start()
        stdin_reader = connector.engine is EngineName.NEONIZE and _read_stdin_lines(console)
        async with asyncio.TaskGroup() as tasks:
            if use_inspector:
                inspector_app = create_inspector_app(relay.webhook_secret.get_secret_value())  # type: ignore[union-attr]
                tasks.create_task(serve_app(inspector_app, LOOPBACK, ports.inspector, stop))
            echo(f"… starting the connector (engine: {connector.engine.value}) and the relay")
            tasks.create_task(run_connector(connector, stop))
            tasks.create_task(serve_app(create_app(relay), LOOPBACK, relay.port, stop))
            urls = (state.relay_url, f"http://{LOOPBACK}:{connector.port}")
            await wait_until(
                lambda: _all_ready(urls, stop), "the relay and the connector to be ready", echo
            )
            if not stop.is_set():
                echo(banner(state, relay, connector, use_inspector))
    finally:
        if stdin_reader:
            asyncio.get_running_loop().remove_reader(sys.stdin.fileno())
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()
        if embedded:
            await asyncio.to_thread(embedded.stop)


async def _all_ready(urls: tuple[str, ...], stop: asyncio.Event) -> bool:
    """True when every service answers /readyz (or when stopping: nothing left to wait for)."""
    return stop.is_set() or all([await ready(url) for url in urls])
