"""`wabus dev`: embedded nats-server, connector, relay and webhook inspector in one process.

Generated credentials are kept in `<data dir>/dev.json` (mode 0600) so they survive restarts and
so the other `wabus` subcommands (`send`, `sim`) find the running stack without configuration.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

from pydantic import SecretStr

from connector.service import ensure_dev_instance, run_connector
from relay.app import create_app
from relay.webhooks.signature import new_secret
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
        "  try it, in another terminal:",
        '    wabus sim inbound default --from 5511999999999 --text "hello"',
        '    wabus send default 5511999999999 "hi from wabus"',
    ]
    return "\n".join(lines)


async def run_dev(env: Settings, ports: DevPorts, stop: asyncio.Event) -> None:
    data_dir = env.data_dir
    state = load_dev_state(data_dir) or DevState(
        api_key=f"dev:{secrets.token_urlsafe(24)}", webhook_secret=new_secret()
    )
    embedded: EmbeddedNats | None = None
    nats_url = env.nats_url
    if not nats_url:
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
    try:
        await ensure_dev_instance(connector, DEV_INSTANCE)
        async with asyncio.TaskGroup() as tasks:
            if use_inspector:
                inspector_app = create_inspector_app(relay.webhook_secret.get_secret_value())  # type: ignore[union-attr]
                tasks.create_task(serve_app(inspector_app, LOOPBACK, ports.inspector, stop))
            tasks.create_task(run_connector(connector, stop))
            tasks.create_task(serve_app(create_app(relay), LOOPBACK, relay.port, stop))
            await asyncio.sleep(1.0)
            print(banner(state, relay, connector, use_inspector), flush=True)
    finally:
        if embedded:
            await asyncio.to_thread(embedded.stop)
