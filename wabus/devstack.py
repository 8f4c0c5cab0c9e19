"""`wabus dev`: embedded nats-server, connector, relay and webhook inspector in one process.

Generated credentials are kept in `<data dir>/dev.json` (mode 0600, enforced on every read and
write) so they survive restarts and so the other `wabus` subcommands (`send`, `sim`) find the
running stack without configuration. Secrets are never printed: the banner shows a fingerprint
of each and says where the full value is.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import json
import logging
import os
import secrets
import stat
import sys
import tempfile
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
from wabus.logs import shown_url
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


log = logging.getLogger(__name__)
"""Standard-library logging: its line reaches stderr even in CLI commands that configure no
logging (`wabus send` prints JSON on stdout), and goes through the structured renderer in
`wabus dev`."""

DEV_FILE_MODE = 0o600


def load_dev_state(data_dir: Path) -> DevState | None:
    """The saved dev credentials, or None; a file others may read is made 0600 first."""
    path = data_dir / DEV_FILE
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return None
    if mode & 0o077:  # group or others may read or write it
        os.chmod(path, DEV_FILE_MODE)
        log.warning(
            "%s was mode %04o, now %04o: it holds the dev API key and webhook secret",
            path, mode, DEV_FILE_MODE,
        )  # fmt: skip
    return DevState(**json.loads(path.read_text()))


def save_dev_state(data_dir: Path, state: DevState) -> None:
    """Write the credentials to a new 0600 file that replaces the old one whole: never readable
    by others, never half-written, whatever mode an earlier file had."""
    data_dir.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=data_dir, prefix=f".{DEV_FILE}.")
    try:
        os.fchmod(descriptor, DEV_FILE_MODE)
        with os.fdopen(descriptor, "w") as file:
            file.write(json.dumps(asdict(state), indent=2))
        os.replace(temporary, data_dir / DEV_FILE)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def fingerprint(secret: str) -> str:
    """A short SHA-256 of `secret`: enough to tell which secret is in use, useless to an
    onlooker (a terminal scroll-back, a screen share, a pasted log)."""
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()[:12]


def shown_api_key(entry: str) -> str:
    """An `id:secret` entry of WABUS_API_KEYS as it may be printed: the id, not the secret."""
    head = entry.partition(":")[0]
    return f"{head}:…  ({fingerprint(entry)})"


def shown_secret(secret: str) -> str:
    """A webhook secret as it may be printed: its `whsec_` prefix and a fingerprint."""
    prefix = "whsec_" if secret.startswith("whsec_") else ""
    return f"{prefix}…  ({fingerprint(secret)})"


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
            tasks.create_task(
                serve_app(
                    create_app(relay),
                    LOOPBACK,
                    relay.port,
                    stop,
                    header_timeout=relay.header_timeout,
                    body_timeout=relay.body_timeout,
                )
            )
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
